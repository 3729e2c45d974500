"""Tensor parallelism 2 on the CPU (one core per rank): the vision tower and the text model
shard, outputs stay the original's, and verl-style weight sync works on every rank."""

from __future__ import annotations

import os

import pytest

from engine_helpers import assert_matches_golden, engine_kwargs, full_logprob_params, golden_request

pytestmark = pytest.mark.engine

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800"]


@pytest.fixture(scope="module")
def tp_llm():
    from vllm import LLM

    import molmo2_shim

    molmo2_shim.install()
    saved = {k: os.environ.get(k) for k in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_ALLOW_INSECURE_SERIALIZATION")}
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"  # vLLM refuses 2 CPU workers without a binding
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # lets the test send a loader function to the ranks
    engine = LLM(**engine_kwargs(tensor_parallel_size=2, distributed_executor_backend="mp", load_format="dummy"))
    yield engine
    del engine
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _sync_weights(worker) -> list[int]:
    """Runs on every rank, as verl's update_weights does: full tensors in, each rank shards."""
    from safetensors.torch import load_file

    import golden

    state = list(load_file(str(golden.CHECKPOINT / "model.safetensors")).items())
    model = worker.model_runner.model
    loaded: set[str] = set()
    for bucket in (state[::3], state[1::3], state[2::3]):
        loaded |= model.load_weights(iter(bucket))
    total = {n for n, _ in model.named_parameters()}
    return [len(loaded), len(total)]


def test_weight_sync_and_golden_cases_under_tp2(tp_llm):
    counts = tp_llm.collective_rpc(_sync_weights)
    assert len(counts) == 2 and all(loaded == total for loaded, total in counts)
    tp_llm.reset_prefix_cache()
    outs = tp_llm.generate([golden_request(n) for n in CASES], full_logprob_params())
    for name, out in zip(CASES, outs):
        assert_matches_golden(out, name)
