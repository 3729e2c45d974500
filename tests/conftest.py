"""Shared pytest setup.

Tests marked `engine` start real vLLM engines on the CPU; they run inside a test
environment built by `make env` (see README). Everything else needs only the package and,
for processor tests, torch/torchvision/transformers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Small CPU footprint for every engine a test starts, in this process and its children.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Lets tests send functions to engine processes (collective_rpc), as verl's server mode does.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


# CI (tools/run_matrix.py) names the vLLM each matrix row must test; then a missing or wrong
# vLLM fails the run instead of skipping every engine test.
EXPECTED_VLLM = os.environ.get("MOLMO2_SHIM_EXPECT_VLLM")


def _vllm_version() -> str | None:
    try:
        import vllm
    except ImportError:
        return None
    return str(vllm.__version__)


def pytest_configure(config: pytest.Config) -> None:
    if not EXPECTED_VLLM:
        return
    found = _vllm_version()
    if found is None or not found.startswith(EXPECTED_VLLM):
        raise pytest.UsageError(
            f"this test run must test vLLM {EXPECTED_VLLM} (MOLMO2_SHIM_EXPECT_VLLM), but "
            + ("vllm cannot be imported" if found is None else f"vllm.__version__ is {found}")
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _vllm_version() is not None:
        return
    skip = pytest.mark.skip(reason="needs vLLM: run inside `make env` (see README); CI deselects these in its unit step")
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(skip)


# -- engines shared across test modules (each start costs ~30 s of CI time) ---------------------

@pytest.fixture(scope="session")
def golden_llm():
    """A multiprocess engine as `vllm serve` and verl's server mode run it: compiled (the CPU
    platform's default torch.compile mode, not enforce_eager), prefix caching on, room for every
    golden case. Tests that change its weights put the checkpoint's back."""
    from vllm import LLM

    import molmo2_shim
    from engine_helpers import engine_kwargs

    molmo2_shim.install()
    engine = LLM(**engine_kwargs(enforce_eager=False, enable_prefix_caching=True, disable_log_stats=False))
    yield engine
    del engine


@pytest.fixture(scope="session")
def inprocess():
    """verl-agent's rollout engine: built in this process (external_launcher's layout), with
    load_format="dummy" and the checkpoint's weights then synced in through `load_weights`, as verl
    does before the first rollout; block_size 16 as on GPUs. `inprocess.before_sync` is the
    text-only golden request's output on the dummy weights."""
    from engine_helpers import InProcessEngine

    engine = InProcessEngine.start()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def small_budget_llm():
    """Chunked prefill with a small step budget, as trainer configs set it: every golden case
    fits one step, a prompt with two 640x480 images does not."""
    from vllm import LLM

    import molmo2_shim
    from engine_helpers import SMALL_BUDGET, engine_kwargs

    molmo2_shim.install()
    engine = LLM(**engine_kwargs(enable_chunked_prefill=True, max_num_batched_tokens=SMALL_BUDGET,
                                 long_prefill_token_threshold=SMALL_BUDGET, max_num_seqs=8, disable_log_stats=False))
    yield engine
    del engine
