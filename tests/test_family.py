"""Every released Molmo2 structure, served by the shim, equals the original implementation.

tests/fixtures/family holds a tiny random checkpoint per structure, built with the original
code, and the original's outputs on text, image, two-image and video prompts
(tools/make_golden.py): Molmo2-8B's Qwen3 backbone (rope_theta 1e6), Molmo2-O-7B's OLMo-3
backbone (post-norm, whole-projection q/k norm, no GQA, YaRN on the listed layers, a GPT-2-style
tokenizer whose BOS is <|endoftext|>), and MolmoWeb (causal image attention, selected with
`is_mm_prefix_lm: false`). Compared: prompt ids (exact), every prompt position's logits
(1e-4), 16 greedy tokens (exact).
"""

from __future__ import annotations

import pytest

import golden
from engine_helpers import engine_kwargs, full_logprob_params, logit_error

pytestmark = [pytest.mark.engine, pytest.mark.model]

CASES = ["text_only", "one_image", "two_images", "video"]
# Other compat-matrix rows run the structure whose backbone differs most, on two cases.
ROW_SUBSET = {("olmo3-7b", "text_only"), ("olmo3-7b", "one_image")}


@pytest.fixture(scope="module", params=golden.family_structures())
def structure_llm(request):
    from vllm import LLM

    import molmo2_shim

    molmo2_shim.install()
    engine = LLM(**engine_kwargs(model=str(golden.FAMILY / request.param / "checkpoint")))
    yield request.param, engine
    del engine


def test_every_structure_is_covered():
    assert {"qwen3-8b", "olmo3-7b", "molmoweb"} <= set(golden.family_structures())


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=[pytest.mark.row_subset] if ("olmo3-7b", c) in ROW_SUBSET else []) for c in CASES
])
def test_structure_equals_the_original(structure_llm, case):
    structure, llm = structure_llm
    z = golden.family_case(structure, case)
    out = llm.generate([golden.request_from_case(golden.family_manifest(structure)["cases"][case])],
                       full_logprob_params())[0]
    assert out.prompt_token_ids == z["input_ids"].tolist(), f"{structure}/{case}: prompt ids"
    error = logit_error(out, z["logits"])
    assert error <= golden.ENGINE_LOGIT_TOLERANCE, f"{structure}/{case}: logits differ by {error:.2e}"
    assert list(out.outputs[0].token_ids) == z["generate"].tolist(), f"{structure}/{case}: greedy tokens"
