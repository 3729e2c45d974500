"""Activation: which patch set the running vLLM gets, applied and undone reversibly.

matrix.py reads compat_matrix.yaml; installer.py is install() / uninstall() / status();
patching.py applies catalog entries when vLLM imports their modules. Importing this package
imports neither torch nor vLLM.
"""
