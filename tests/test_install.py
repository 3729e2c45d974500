"""install() / uninstall() on a real vLLM: idempotent, thread-safe, cheap, reversible."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.engine

import molmo2_shim  # noqa: E402
from golden import CHECKPOINT  # noqa: E402
from molmo2_shim.activation import installer  # noqa: E402
from molmo2_shim.engine.identifiers import ARCHITECTURE, MODEL_REFERENCE  # noqa: E402


@pytest.fixture
def clean():
    molmo2_shim.uninstall()
    yield
    molmo2_shim.uninstall()


def _wrapped_methods() -> dict[str, bool]:
    import wrapt
    from vllm.config.model import ModelConfig
    from vllm.inputs.preprocess import InputPreprocessor
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.sched.scheduler import Scheduler

    targets = {
        "get_computed_blocks": KVCacheManager.__dict__["get_computed_blocks"],
        "_try_schedule_encoder_inputs": Scheduler.__dict__["_try_schedule_encoder_inputs"],
        "get_vocab_size": ModelConfig.__dict__["get_vocab_size"],
        "_process_tokens": InputPreprocessor.__dict__["_process_tokens"],
    }
    return {k: isinstance(v, wrapt.FunctionWrapper) for k, v in targets.items()}


def _registered() -> object:
    from vllm.model_executor.models import ModelRegistry

    return ModelRegistry.models.get(ARCHITECTURE)


def test_install_registers_lazily_and_reports(clean):
    status = molmo2_shim.install()
    assert status.action == "installed"
    assert status.registered == {ARCHITECTURE: MODEL_REFERENCE}
    assert status.patch_set in ("v0_11_0", "v0_11_1")
    assert "registered" in str(status) and status.vllm_version in str(status)
    assert getattr(_registered(), "module_name", None) == "molmo2_shim.registered_model"
    assert all(_wrapped_methods().values())


def test_install_is_idempotent(clean):
    first = molmo2_shim.install()
    second = molmo2_shim.install()
    assert first is second
    assert len(installer._undo) == len(first.changes)


def test_concurrent_installs_apply_once(clean):
    results: list[object] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(molmo2_shim.install())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(r is results[0] for r in results)
    assert len(installer._undo) == len(results[0].changes)


def test_uninstall_restores_vllm(clean):
    before = _registered()
    molmo2_shim.install()
    assert molmo2_shim.uninstall() is True
    assert _registered() is before
    assert not any(_wrapped_methods().values())
    from vllm.transformers_utils import config as vllm_config

    assert "molmo2" not in vllm_config._CONFIG_REGISTRY
    assert molmo2_shim.uninstall() is False
    molmo2_shim.install()
    molmo2_shim.install()
    assert molmo2_shim.uninstall() is True
    assert not any(_wrapped_methods().values())


def test_transformers_auto_classes_load_molmo2_without_remote_code(clean):
    from transformers import AutoConfig, AutoProcessor

    from molmo2_shim.processing.config import Molmo2Config
    from molmo2_shim.processing.processor import Molmo2Processor

    molmo2_shim.install()
    assert isinstance(AutoConfig.from_pretrained(CHECKPOINT), Molmo2Config)
    processor = AutoProcessor.from_pretrained(CHECKPOINT)
    assert type(processor) is Molmo2Processor
    assert processor.special.patch == AutoConfig.from_pretrained(CHECKPOINT).image_patch_id
    molmo2_shim.uninstall()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "molmo2" not in CONFIG_MAPPING:  # transformers before 5.x knows no molmo2 of its own
        with pytest.raises(ValueError):  # the checkpoint ships no code to fall back on
            AutoConfig.from_pretrained(CHECKPOINT)


def test_repeated_install_uninstall_under_threads(clean):
    def cycle() -> None:
        for _ in range(20):
            molmo2_shim.install()
            molmo2_shim.uninstall()

    threads = [threading.Thread(target=cycle) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert molmo2_shim.status() is None
    assert not any(_wrapped_methods().values())


def test_unsupported_vllm_leaves_nothing_patched(clean, monkeypatch):
    import vllm

    before = _registered()
    monkeypatch.setattr(vllm, "__version__", "0.10.2")
    with pytest.raises(molmo2_shim.UnsupportedVLLMVersionError, match="0.11"):
        molmo2_shim.install()
    monkeypatch.setattr(vllm, "__version__", "0.9.2")
    with pytest.raises(molmo2_shim.UnsupportedVLLMVersionError):
        molmo2_shim.install()
    assert molmo2_shim.status() is None
    assert _registered() is before
    assert not any(_wrapped_methods().values())


def test_a_failing_change_rolls_back_the_others(clean, monkeypatch):
    from molmo2_shim.patches import catalog

    def broken(module) -> None:
        raise RuntimeError("simulated failure inside a patch")

    every_set = tuple(catalog.PATCH_SETS)
    failing = catalog.Entry("broken", catalog.REGISTRY, "vllm", every_set, why="", upstream="", remove_when="", apply=broken)
    monkeypatch.setattr(catalog, "CATALOG", [*catalog.CATALOG, failing])
    before = _registered()
    with pytest.raises(molmo2_shim.PatchError, match="broken"):
        molmo2_shim.install()
    assert molmo2_shim.status() is None
    assert _registered() is before
    assert not any(_wrapped_methods().values())


def test_disable_switch_only_affects_automatic_activation(clean, monkeypatch):
    monkeypatch.setenv("MOLMO2_SHIM_DISABLE", "1")
    assert molmo2_shim.install(automatic=True).action == "disabled"
    molmo2_shim.uninstall()
    assert molmo2_shim.install().action == "installed"


def test_install_imports_no_model_code_and_initialises_no_cuda():
    code = (
        "import sys, vllm, torch, molmo2_shim; molmo2_shim.install(); "
        "heavy = [m for m in sys.modules if m.startswith(('molmo2_shim.model', 'molmo2_shim.patches.v0'))"
        " and m.endswith(('base', 'model', 'vision', 'text'))]; "
        "print(heavy, torch.cuda.is_initialized())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[] False"
