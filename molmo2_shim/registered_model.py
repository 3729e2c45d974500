"""The module vLLM's registry imports (lazily, also in fresh child processes).

It picks the running vLLM's patch set itself, so it imports cleanly even in a process where
install() never ran (for example when VLLM_PLUGINS excludes the shim), and it activates the
shim there so the engine-side patches are in place wherever the model is loaded.
"""

from __future__ import annotations

from .installer import install, patch_set_module, status
from .matrix import lookup
from .installer import vllm_version

if status() is None:
    install(override_native=True)
_row = lookup(vllm_version()).row
if _row.patch_set is None:
    raise ImportError(f"molmo2-shim has no Molmo2 implementation for vLLM {vllm_version()} (row {_row.name})")

Molmo2ForConditionalGeneration = patch_set_module(_row.patch_set).model_class()

__all__ = ["Molmo2ForConditionalGeneration"]
