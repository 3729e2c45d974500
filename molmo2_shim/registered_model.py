"""The module vLLM's model registry imports (lazily, also in fresh child processes).

It picks the running vLLM's patch set itself, so it imports cleanly even in a process where
install() never ran (for example when VLLM_PLUGINS excludes the shim), and it activates the
shim there so the engine-side patches are in place wherever the model is loaded.
"""

from __future__ import annotations

import importlib

from .activation.installer import active_patch_set, install, status, vllm_version
from .activation.matrix import lookup

if status() is None:
    install(override_native=True)
_chosen = active_patch_set(lookup(vllm_version()), override_native=True)
if _chosen is None or _chosen.model is None:
    raise ImportError(f"molmo2-shim has no Molmo2 implementation for vLLM {vllm_version()}")
_module, _, _name = _chosen.model.partition(":")
Molmo2ForConditionalGeneration = getattr(importlib.import_module(_module), _name)

__all__ = ["Molmo2ForConditionalGeneration"]
