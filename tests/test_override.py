"""Opt-in override on a vLLM with native Molmo2: the shim's exact model replaces native's and
serves the golden cases exactly (rows whose matrix entry names an override patch set)."""

from __future__ import annotations

import os

import pytest

from engine_helpers import assert_matches_golden, engine_kwargs, full_logprob_params, golden_request

pytestmark = [pytest.mark.engine, pytest.mark.override]

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800", "video_4f_320x240"]


@pytest.fixture(scope="module")
def override_llm():
    import vllm

    import molmo2_shim
    from molmo2_shim.activation.matrix import lookup

    row = lookup(vllm.__version__).row
    if row.status != "native" or not row.patch_set:
        pytest.skip("no opt-in override on this vLLM")
    molmo2_shim.uninstall()
    previous = os.environ.get("MOLMO2_SHIM_OVERRIDE_NATIVE")
    os.environ["MOLMO2_SHIM_OVERRIDE_NATIVE"] = "1"  # the engine-core process reads it too
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # so the test can ask the worker for its class
    status = molmo2_shim.install()
    assert status.action == "installed" and status.patch_set == row.patch_set
    engine = __import__("vllm").LLM(**engine_kwargs(enable_prefix_caching=True))
    yield engine
    del engine
    molmo2_shim.uninstall()
    if previous is None:
        os.environ.pop("MOLMO2_SHIM_OVERRIDE_NATIVE", None)
    else:
        os.environ["MOLMO2_SHIM_OVERRIDE_NATIVE"] = previous


def test_the_engine_runs_the_shim_model(override_llm):
    def module(worker):
        return type(worker.model_runner.model).__module__

    assert all(m.startswith("molmo2_shim.patches.") for m in override_llm.collective_rpc(module))


@pytest.mark.parametrize("name", CASES)
def test_golden_cases_exact_under_override(override_llm, name):
    out = override_llm.generate([golden_request(name)], full_logprob_params())[0]
    assert_matches_golden(out, name)


def test_mixed_batch_under_override(override_llm):
    outs = override_llm.generate([golden_request(n) for n in CASES], full_logprob_params())
    for name, out in zip(CASES, outs):
        assert_matches_golden(out, name)


def test_vllm_prefix_lm_attention_is_off_for_the_shim_model(override_llm):
    """vLLM 0.22 lists molmo2 as a prefix LM (per-image bidirectional ranges in its attention
    backend). The shim's model applies the original's mask itself, so in the engine that serves
    it neither the model runner nor any attention layer may use vLLM's ranges."""
    def prefix_lm_flags(worker):
        runner = worker.model_runner
        layers = [m.use_mm_prefix for m in runner.model.modules() if hasattr(m, "use_mm_prefix")]
        return getattr(runner, "is_mm_prefix_lm", None), layers, runner.model_config.is_mm_prefix_lm

    for runner_flag, layer_flags, config_flag in override_llm.collective_rpc(prefix_lm_flags):
        assert runner_flag in (False, None) and config_flag is False
        assert layer_flags and not any(layer_flags)


def test_the_attention_backend_is_the_one_native_molmo2_gets(override_llm):
    """With the prefix-LM flag off, vLLM would pick its backend as for any causal model; the shim
    keeps the one the platform's selector gives a prefix LM (native Molmo2's), as every decoder
    attention layer shows. The selector is asked here directly, in the engine's worker."""
    def backends(worker):
        from vllm.platforms import current_platform
        from vllm.v1.attention.selector import AttentionSelectorConfig

        model = worker.model_config
        native = current_platform.get_attn_backend_cls(None, AttentionSelectorConfig(
            head_size=model.get_head_size(), dtype=model.dtype, kv_cache_dtype=worker.cache_config.cache_dtype,
            block_size=None, use_mm_prefix=True))
        layers = sorted({m.attn_backend.get_name() for m in worker.model_runner.model.modules()
                         if hasattr(m, "use_mm_prefix") and hasattr(m, "attn_backend")})
        chosen = worker.vllm_config.attention_config.backend
        return native, layers, chosen.get_path() if chosen else None, chosen.name if chosen else None

    for native, layers, chosen_path, chosen_name in override_llm.collective_rpc(backends):
        assert chosen_path == native
        assert set(layers) == {chosen_name}
