"""Engine settings under which the original's attention cannot be reproduced are made exact or
refused at engine start, requests that cannot be exact are refused, and with the opt-out
(MOLMO2_SHIM_ALLOW_INEXACT=1) they run, logged with their id and counted where operators look.

Engine configs are built with `EngineArgs.create_engine_config()`, the call `LLM(...)` and
`vllm serve` make before starting an engine.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

import golden
from engine_helpers import (
    SMALL_BUDGET,
    assert_matches_golden,
    engine_kwargs,
    full_logprob_params,
    golden_request,
    greedy_params,
)

pytestmark = pytest.mark.engine

ALLOW = "MOLMO2_SHIM_ALLOW_INEXACT"
IMAGE_REGION = 1401  # BOS + the tiny checkpoint's largest image block (8 crops)


def engine_config(**overrides):
    from vllm.engine.arg_utils import EngineArgs

    import molmo2_shim

    molmo2_shim.install()
    kwargs = engine_kwargs(**overrides)
    return EngineArgs(**kwargs).create_engine_config()


def two_image_request() -> dict:
    """Two 640x480 images: a region of 1 + 2 labels + 2 x 752 tokens, more than SMALL_BUDGET."""
    image = golden.model_case_images("one_image_640x480")[0]
    return {"prompt": "Image 1<|image|>Image 2<|image|>Compare them.", "multi_modal_data": {"image": [image, image]}}


# -- at engine start -------------------------------------------------------------------------------

@pytest.mark.row_subset
def test_threshold_below_an_image_region_is_refused_within_seconds(monkeypatch):
    from vllm import LLM

    import molmo2_shim

    monkeypatch.delenv(ALLOW, raising=False)
    molmo2_shim.install()
    start = time.time()
    with pytest.raises(molmo2_shim.Molmo2ConfigError) as exc:
        LLM(**engine_kwargs(enable_chunked_prefill=True, max_num_batched_tokens=2048, long_prefill_token_threshold=64))
    assert time.time() - start < 60
    message = str(exc.value)
    assert "long_prefill_token_threshold=64" in message and str(IMAGE_REGION) in message and ALLOW in message


@pytest.mark.row_subset
def test_budget_below_an_image_region_is_refused(monkeypatch):
    import molmo2_shim

    monkeypatch.delenv(ALLOW, raising=False)
    with pytest.raises(molmo2_shim.Molmo2ConfigError, match=rf"max_num_batched_tokens=512 .* at least {IMAGE_REGION}"):
        engine_config(enable_chunked_prefill=True, max_num_batched_tokens=512)


def test_pipeline_parallel_is_refused(monkeypatch):
    import molmo2_shim

    monkeypatch.delenv(ALLOW, raising=False)
    with pytest.raises(molmo2_shim.Molmo2ConfigError, match=r"pipeline_parallel_size=2\b.*pipeline_parallel_size=1"):
        engine_config(pipeline_parallel_size=2, distributed_executor_backend="mp")


def test_full_cuda_graphs_are_replaced_by_a_mode_that_keeps_the_recompute(monkeypatch):
    """The CPU platform captures no graphs, so the GPU setting is put on a real engine config
    the way a GPU platform leaves it; docs/benchmarks.md has the same check on an H200."""
    from molmo2_shim.engine.exactness import check_engine

    monkeypatch.delenv(ALLOW, raising=False)
    config = engine_config()
    cc = config.compilation_config
    modes = type(cc.cudagraph_mode)
    cc.cudagraph_mode = modes.FULL
    cc.splitting_ops = list(cc._attention_ops)
    notes = check_engine(config, None)
    assert cc.cudagraph_mode == modes.FULL_AND_PIECEWISE and "cudagraph_mode=FULL" in notes[0]
    cc.cudagraph_mode, cc.splitting_ops = modes.FULL, []
    check_engine(config, None)
    assert cc.cudagraph_mode == modes.FULL_DECODE_ONLY
    monkeypatch.setenv(ALLOW, "1")
    cc.cudagraph_mode = modes.FULL
    notes = check_engine(config, None)
    assert cc.cudagraph_mode == modes.FULL and ALLOW in notes[0]


def test_startup_notice_is_quiet_when_every_prompt_fits_and_uses_the_real_limits(caplog, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    with caplog.at_level(logging.WARNING, logger="molmo2_shim"):
        engine_config(limit_mm_per_prompt={"image": 2, "video": 0}, max_num_batched_tokens=4096)
    assert not [r for r in caplog.records if "molmo2-shim" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="molmo2_shim"):
        engine_config(limit_mm_per_prompt={"image": 4, "video": 0}, max_num_batched_tokens=2048)
    notices = [r.getMessage() for r in caplog.records if "molmo2-shim" in r.getMessage()]
    assert len(notices) == 1 and "max_num_batched_tokens >= 4096" in notices[0] and "configured" in notices[0]


# -- per request -----------------------------------------------------------------------------------

@pytest.mark.row_subset
def test_a_region_longer_than_a_step_is_refused_and_the_engine_keeps_serving(small_budget_llm, monkeypatch):
    import molmo2_shim

    monkeypatch.delenv(ALLOW, raising=False)
    before = molmo2_shim.inexact_requests()
    with pytest.raises(molmo2_shim.Molmo2InputError, match=rf"max_num_batched_tokens={SMALL_BUDGET}.*{ALLOW}"):
        small_budget_llm.generate([two_image_request()], greedy_params(2))
    assert molmo2_shim.inexact_requests() == before
    assert_matches_golden(small_budget_llm.generate([golden_request("one_image_640x480")], full_logprob_params())[0],
                          "one_image_640x480")


@pytest.mark.row_subset
def test_with_the_opt_out_it_runs_and_is_logged_and_counted(small_budget_llm, monkeypatch, caplog):
    """The same images as a request refused a moment before: that refusal must not have left them
    recorded as sent to the engine."""
    import molmo2_shim

    monkeypatch.delenv(ALLOW, raising=False)
    with pytest.raises(molmo2_shim.Molmo2InputError):  # refused first, after vLLM processed its images
        small_budget_llm.generate([two_image_request()], greedy_params(2))
    monkeypatch.setenv(ALLOW, "1")
    before = molmo2_shim.inexact_requests().get("region_longer_than_a_step", 0)
    with caplog.at_level(logging.WARNING, logger="molmo2_shim"):
        out = small_budget_llm.generate([two_image_request()], greedy_params(2))[0]
    assert len(out.outputs[0].token_ids) == 2
    assert molmo2_shim.inexact_requests()["region_longer_than_a_step"] == before + 1
    logged = [r.getMessage() for r in caplog.records if "runs inexactly" in r.getMessage()]
    assert len(logged) == 1 and f"request {out.request_id}" in logged[0]
    counted = [m for m in small_budget_llm.get_metrics() if m.name == "vllm:molmo2_shim_inexact_requests"]
    assert {m.labels["reason"]: m.value for m in counted}["region_longer_than_a_step"] == before + 1


def test_a_threshold_below_a_region_with_the_opt_out_finishes(monkeypatch):
    """The scheduler rule that holds a request back for a whole-region step knows the threshold:
    with the opt-out the request is chunked (inexactly) and finishes instead of waiting forever."""
    from vllm import LLM

    import molmo2_shim

    monkeypatch.setenv(ALLOW, "1")
    molmo2_shim.install()
    llm = LLM(**engine_kwargs(enable_chunked_prefill=True, max_num_batched_tokens=2048, long_prefill_token_threshold=64,
                              max_model_len=2048))
    try:
        start = time.time()
        image, text = llm.generate([golden_request("one_image_640x480"), golden_request("text_only")], full_logprob_params())
        assert time.time() - start < 120
        assert len(image.outputs[0].token_ids) == 16
        assert_matches_golden(text, "text_only")  # text-only prompts stay exact when chunked
    finally:
        del llm


# -- doctor ------------------------------------------------------------------------------------------

def doctor(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "molmo2_shim", "--json", "doctor", "--no-child", *args],
                          capture_output=True, text=True, timeout=600)
    return json.loads(proc.stdout)


@pytest.mark.row_subset
def test_doctor_says_before_launch_whether_engine_arguments_are_exact(tmp_path):
    bad = doctor(str(golden.CHECKPOINT), "--engine-args", "--max-num-batched-tokens 512 --max-model-len 4096")
    exactness = [c for c in bad["checks"] if c["name"] == "exactness"]
    assert exactness and exactness[0]["ok"] is False and "max_num_batched_tokens=512" in exactness[0]["detail"]
    rollout = tmp_path / "rollout.yaml"
    rollout.write_text("max_num_batched_tokens: 8192\nprompt_length: 3072\nresponse_length: 1024\n"
                       "tensor_model_parallel_size: 1\nenable_chunked_prefill: true\nlimit_images: 2\n")
    good = doctor(str(golden.CHECKPOINT), "--verl-rollout", str(rollout))
    exactness = [c for c in good["checks"] if c["name"] == "exactness"]
    assert exactness and exactness[0]["ok"] is True, exactness
