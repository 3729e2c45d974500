"""The built wheel carries the matrix and the patch sets, and works outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True)
    (whl,) = out.glob("molmo2_shim-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "molmo2_shim/compat_matrix.yaml" in names
    assert "molmo2_shim/patches/v0_11_1/model.py" in names
    for module in ("model/base.py", "model/vision.py", "processing/image.py", "diagnostics/doctor.py"):
        assert f"molmo2_shim/{module}" in names, module
    assert not any(n.startswith("patches/") for n in names), "no global `patches` package"
    matrix = zipfile.ZipFile(wheel).read("molmo2_shim/compat_matrix.yaml").decode()
    assert matrix == (REPO / "compat_matrix.yaml").read_text()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[vllm.general_plugins]" in text and "molmo2_shim = molmo2_shim.plugin:register" in text


def test_installed_wheel_works_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    assert not (target / "patches").exists()
    code = (
        "import molmo2_shim, json; s = molmo2_shim.install(); "
        "from vllm.model_executor.models import ModelRegistry; "
        "info = ModelRegistry._try_inspect_model_cls('Molmo2ForConditionalGeneration'); "
        "import molmo2_shim.model.base as base; "
        "print(json.dumps([molmo2_shim.__file__, s.action, s.patch_set, info is not None, base.__file__]))"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    file, action, patch_set, inspected, model_file = json.loads(proc.stdout.strip().splitlines()[-1])
    assert file.startswith(str(target)), "the installed wheel, not the checkout, must be imported"
    assert model_file.startswith(str(target)), "the model code must come from the wheel too"
    assert action == "installed" and patch_set and inspected
