"""Tensor parallelism 2 on the CPU (one core per rank), with the engine inside a Ray actor on a
local Ray cluster the test starts, as verl's rollout workers hold it: the shim is active in every
rank without being imported, the vision tower and the text model shard, outputs stay the
original's, and verl-style weight sync works on every rank.

The engine asks for distributed_executor_backend="ray", but vLLM's Ray executor cannot run on
its CPU platform: 0.11.x's CpuPlatform.check_and_update_config replaces "ray" by "mp" when
world_size > 1 (warning "ray is not supported on CPU, fallback to mp distributed executor
backend"), and CpuPlatform.ray_device_key is empty, which initialize_ray_cluster refuses
("current platform cpu does not support ray"). The ranks are therefore vLLM's mp workers, children
of the Ray actor. The test asserts that fallback, so a vLLM that keeps Ray on CPU turns it red.
What vLLM's Ray executor hands its workers is checked without an engine (the env-var test).
"""

from __future__ import annotations

import os
import sys

import pytest

from engine_helpers import assert_matches_golden, engine_kwargs, full_logprob_params, golden_request

pytestmark = pytest.mark.engine

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SHIM_SWITCHES = ("MOLMO2_SHIM_ALLOW_INEXACT", "MOLMO2_SHIM_OVERRIDE_NATIVE", "MOLMO2_SHIM_DISABLE")
RUNTIME_ENV_VARS = {
    "PYTHONPATH": TESTS_DIR,  # the actor and the ranks unpickle this module's functions
    "VLLM_CPU_OMP_THREADS_BIND": "0|1",  # vLLM refuses 2 CPU workers without a binding
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",  # lets the test send functions to the ranks
    "MOLMO2_SHIM_TEST_MARKER": "from-runtime-env",  # shows the job's runtime_env reached the ranks
}


def _import_ray():
    if os.environ.get("MOLMO2_SHIM_EXPECT_VLLM"):  # CI's full-suite rows install Ray (tools/testenv.py)
        import ray

        return ray
    return pytest.importorskip("ray")


class RolloutActor:
    """A Ray actor that builds vLLM itself, as verl's rollout workers do. It never imports
    molmo2_shim: only the vllm.general_plugins entry point can activate the shim here."""

    def __init__(self, kwargs: dict) -> None:
        from vllm import LLM

        self.imported_before = "molmo2_shim" in sys.modules
        self.llm = LLM(**kwargs)

    def imported_shim_before_the_engine(self) -> bool:
        return self.imported_before

    def backend(self) -> str:
        return self.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend

    def call(self, method: str, *args):
        return getattr(self.llm, method)(*args)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm


class ActorEngine:
    """The test's handle on the actor's LLM."""

    def __init__(self, ray, actor) -> None:
        self.ray, self.actor = ray, actor

    def __getattr__(self, method: str):
        return lambda *args: self.ray.get(self.actor.call.remote(method, *args), timeout=600)


@pytest.fixture(scope="module")
def tp_llm():
    ray = _import_ray()
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=128 * 2**20,
             runtime_env={"env_vars": RUNTIME_ENV_VARS}, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(RolloutActor).remote(
            engine_kwargs(tensor_parallel_size=2, distributed_executor_backend="ray", load_format="dummy"))
        engine = ActorEngine(ray, actor)
        yield engine
        ray.get(actor.close.remote(), timeout=120)
    finally:
        ray.shutdown()


def _rank_facts(worker) -> dict:
    return {"model_module": type(worker.model_runner.model).__module__,
            "marker": os.environ.get("MOLMO2_SHIM_TEST_MARKER")}


def test_every_rank_runs_the_shim_in_an_engine_in_a_ray_actor(tp_llm):
    ray, actor = tp_llm.ray, tp_llm.actor
    assert ray.get(actor.imported_shim_before_the_engine.remote()) is False
    assert ray.get(actor.backend.remote()) == "mp", "vLLM keeps the Ray executor on CPU now: check its Ray workers here"
    ranks = tp_llm.collective_rpc(_rank_facts)
    assert len(ranks) == 2
    assert all(r["model_module"].startswith("molmo2_shim.") for r in ranks), ranks
    assert all(r["marker"] == "from-runtime-env" for r in ranks), ranks


def test_ray_workers_get_vllm_variables_but_not_the_shims_switches():
    """What vLLM's Ray executor copies from the engine's process to its Ray workers before they
    load plugins (RayDistributedExecutor._init_workers_ray, then init_worker): every VLLM_* variable vLLM defines,
    so VLLM_PLUGINS, but not the shim's MOLMO2_SHIM_* switches; on other nodes those come only
    from the Ray job's runtime_env (docs/verl.md)."""
    from vllm.ray.ray_env import get_env_vars_to_copy
    from vllm.v1.executor.ray_distributed_executor import RayDistributedExecutor  # 0.11.0 and 0.11.2

    copied = get_env_vars_to_copy(exclude_vars=RayDistributedExecutor.WORKER_SPECIFIC_ENV_VARS,
                                  additional_vars=RayDistributedExecutor.ADDITIONAL_ENV_VARS)
    assert "VLLM_PLUGINS" in copied
    assert not copied & set(SHIM_SWITCHES)


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
