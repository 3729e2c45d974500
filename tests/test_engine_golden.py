"""A real vLLM engine with the shim serves the golden cases exactly as the original model.

Compared: prompt ids (exact), greedy 16-token continuations (exact), and the logits of every
prompt position (max |difference| <= 1e-4, up to each position's additive constant, which is
all that log-probabilities keep). The shared engine runs compiled, in the CPU platform's default
torch.compile mode; the in-process engine (block size 16, as on GPUs) runs eagerly.
"""

from __future__ import annotations

import numpy as np
import pytest

import golden
from engine_helpers import (
    assert_matches_golden,
    full_logprob_params,
    golden_request,
    greedy_params,
    logits_difference,
    position_logprobs,
)

pytestmark = [pytest.mark.engine, pytest.mark.model]

MODEL_CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800", "video_4f_320x240"]


@pytest.fixture(scope="module")
def llm(golden_llm):
    return golden_llm


@pytest.fixture(params=["cpu_default_block_size", "block_size_16"])
def cached_llm(request, golden_llm, inprocess):
    """Prefix-cache tests run with the CPU platform's block size (128) and the GPUs' (16)."""
    llm = golden_llm if request.param == "cpu_default_block_size" else inprocess.llm
    expected = 16 if request.param == "block_size_16" else None
    if expected is not None:
        assert llm.llm_engine.vllm_config.cache_config.block_size == expected
    return llm


@pytest.mark.row_subset
def test_the_shared_engine_is_compiled(llm):
    cc = llm.llm_engine.vllm_config.compilation_config
    mode = cc.mode if getattr(cc, "mode", None) is not None else cc.level  # `level` until 0.11.0, `mode` after
    assert int(getattr(mode, "value", mode)) > 0, "the golden cases must run with vLLM's compilation on"


ROW_SUBSET = {"text_only", "one_image_640x480"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.row_subset] if n in ROW_SUBSET else []) for n in MODEL_CASES]
)
def test_golden_case(llm, name):
    out = llm.generate([golden_request(name)], full_logprob_params())[0]
    assert_matches_golden(out, name)


def test_image_without_placeholder_is_put_first(llm):
    """verl-agent's shape: the original processor drops the image; the shim puts it first."""
    case = golden.manifest()["model_cases"]["image_without_placeholder_378x378"]
    image = golden.model_case_images("image_without_placeholder_378x378")
    no_placeholder = {"prompt": case["prompt"], "multi_modal_data": {"image": image}}
    with_placeholder = {"prompt": "<|image|>" + case["prompt"], "multi_modal_data": {"image": image}}
    a, b = llm.generate([no_placeholder, with_placeholder], full_logprob_params())
    assert a.prompt_token_ids == b.prompt_token_ids
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    np.testing.assert_allclose(position_logprobs(a), position_logprobs(b), atol=1e-5)


def test_three_prompt_shapes_give_identical_outputs(llm):
    """Placeholders (chat template), no placeholders (verl-agent), expanded ids (verl agent loop)."""
    name = "two_images_300x200_500x800"
    z = golden.model_case(name)
    images = golden.model_case_images(name)
    tokenizer = llm.get_tokenizer()
    text_part = golden.manifest()["model_cases"][name]["prompt"].split("<|image|>")[-1]
    shapes = {
        "placeholders": {"prompt": golden.manifest()["model_cases"][name]["prompt"]},
        "no_placeholders": {"prompt_token_ids": tokenizer.encode(text_part, add_special_tokens=False)},
        "expanded": {"prompt_token_ids": z["input_ids"].tolist()},
    }
    outs = llm.generate([{**p, "multi_modal_data": {"image": images}} for p in shapes.values()], greedy_params())
    for shape, out in zip(shapes, outs):
        assert out.prompt_token_ids == z["input_ids"].tolist(), shape
        assert list(out.outputs[0].token_ids) == z["generate_bidir"].tolist(), shape


def test_mixed_batch_of_text_and_image_requests(llm):
    names = ["text_only", "one_image_640x480", "text_only", "two_images_300x200_500x800", "video_4f_320x240"]
    outs = llm.generate([golden_request(n) for n in names], full_logprob_params())
    for name, out in zip(names, outs):
        assert_matches_golden(out, name)


def test_prefix_cache_reuses_a_whole_image_region(cached_llm):
    llm = cached_llm
    name = "one_image_640x480"
    request = golden_request(name)
    first = llm.generate([request], greedy_params())[0]
    second = llm.generate([request], full_logprob_params(prompt=False))[0]
    assert second.num_cached_tokens > 0, "the repeated request should hit the prefix cache"
    assert list(first.outputs[0].token_ids) == golden.model_case(name)["generate_bidir"].tolist()
    assert list(second.outputs[0].token_ids) == golden.model_case(name)["generate_bidir"].tolist()
    last = np.array([second.outputs[0].logprobs[0][t].logprob for t in range(512)])
    ref = golden.model_case(name)["logits_bidir"][-1]
    assert logits_difference(last, ref) <= golden.ENGINE_LOGIT_TOLERANCE


def test_prefix_cache_hit_inside_an_image_region_is_not_used(cached_llm):
    """Same image, another question: cached blocks end inside the image region, so they are
    recomputed (their reuse would leave the region's last tokens without the later keys)."""
    llm = cached_llm
    name = "one_image_640x480"
    base = golden_request(name)
    llm.generate([base], greedy_params())
    other = dict(base, prompt=base["prompt"].replace("Describe this image.", "What is in the picture?"))
    cached = llm.generate([other], greedy_params())[0]
    assert cached.num_cached_tokens == 0
    fresh = llm.generate([other], full_logprob_params())[0]  # prompt logprobs: never reads the cache
    assert cached.outputs[0].token_ids == fresh.outputs[0].token_ids


def test_chunked_prefill_with_a_small_token_budget(small_budget_llm):
    """1424 tokens per step (and long_prefill_token_threshold 1424): prompts are chunked and
    requests compete for the budget, but an image region is never split (the two-image prompt
    has 1432 tokens, its region ends at 1413)."""
    outs = small_budget_llm.generate([golden_request(n) for n in MODEL_CASES], full_logprob_params())
    for name, out in zip(MODEL_CASES, outs):
        assert_matches_golden(out, name)
