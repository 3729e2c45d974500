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
