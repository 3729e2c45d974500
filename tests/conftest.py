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


def _have_vllm() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_vllm():
        return
    skip = pytest.mark.skip(reason="needs vLLM: run inside `make env` (see README)")
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(skip)
