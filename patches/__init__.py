"""Per-vLLM-version code, installed as molmo2_shim.patches (never as a top-level `patches`).

catalog.py lists every place the shim touches vLLM, with the patch sets that use each entry;
compat_matrix.yaml (next to this folder) maps vLLM versions to patch sets. The modules next to
this file hold the wrappers and registry entries several patch sets share; each folder
(v0_11_0, v0_11_1, v0_13, v0_22) holds the thin model adapter of one vLLM API generation
(method names and class attributes that version's runner expects), over the model math in
molmo2_shim.model. patches/README.md is the catalog in readable form (generated).
"""
