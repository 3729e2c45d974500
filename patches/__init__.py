"""Per-vLLM-version code, installed as molmo2_shim.patches (never as a top-level `patches`).

One folder per vLLM API generation; compat_matrix.yaml maps version ranges to a folder. Each
folder's __init__ exposes:

* `changes()`: the reversible changes install() applies, in order;
* `model_class()`: the Molmo2ForConditionalGeneration class for that generation (a thin
  subclass of molmo2_shim.model.base.Molmo2Base; the model math lives there, once).

Wrappers that several generations share live in the modules next to this file; each starts
with what it changes, why, the versions it applies to and when it can go.
"""
