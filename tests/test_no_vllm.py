"""Without vLLM: importing the shim is cheap and install() fails with a typed, helpful error."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_loads_neither_torch_nor_vllm():
    proc = _python("import sys, molmo2_shim; print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_install_without_vllm_raises_a_typed_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here; this runs in the unit environment")
    import molmo2_shim

    with pytest.raises(molmo2_shim.VLLMNotInstalledError) as exc:
        molmo2_shim.install()
    assert "0.11.2" in str(exc.value) and "pip install" in str(exc.value)
    assert molmo2_shim.status() is None
