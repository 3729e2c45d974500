"""The PEFT LoRA fixtures (tests/fixtures/lora) and the check against their goldens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import golden
from engine_helpers import logits_difference, position_logprobs

LORA = golden.FIXTURES / "lora"


def adapter(name: str) -> Path:
    return LORA / name


def lora_golden(name: str, case: str) -> dict[str, np.ndarray]:
    with np.load(LORA / name / "golden" / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def lora_request(name: str, int_id: int) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, int_id, str(adapter(name)))


def assert_matches_peft(output: Any, name: str, case: str) -> None:
    z = lora_golden(name, case)
    assert list(output.prompt_token_ids) == z["input_ids"].tolist(), f"{name}/{case}: prompt ids differ"
    error = logits_difference(position_logprobs(output)[z["positions"]], z["logits"])
    assert error <= golden.ENGINE_LOGIT_TOLERANCE, f"{name}/{case}: logits differ from PEFT's by {error:.2e}"
    assert list(output.outputs[0].token_ids) == z["generate"].tolist(), f"{name}/{case}: greedy continuation differs"
