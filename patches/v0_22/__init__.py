"""Patch set for vLLM 0.22.x, used only when the user opts in to replace vLLM's native Molmo2
(MOLMO2_SHIM_OVERRIDE_NATIVE=1 / install(override_native=True)).

API generation: the processor's apply() takes one ProcessorInputs (hashes come from its
get_mm_hashes); prompts reach the processor through the renderer (vllm/renderers), not the
input preprocessor; the runner passes a CPU placeholder mask; decoder attention lives in
vllm.model_executor.layers.attention.
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.registration import common_changes

from . import engine_rules


def changes() -> list[Any]:
    return [*engine_rules.changes(), *common_changes()]


def model_class() -> type:
    from .model import Molmo2ForConditionalGeneration

    return Molmo2ForConditionalGeneration
