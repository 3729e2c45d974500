"""Wheels, sdists and editable installs all carry the matrix and the patch sets, and work
outside the repository (no symlinks: patches/ and compat_matrix.yaml are mapped in by
pyproject.toml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]

PROBE = (
    "import json, molmo2_shim, molmo2_shim.patches as p; "
    "from molmo2_shim.activation.matrix import load_matrix; "
    "s = molmo2_shim.install(); "
    "from vllm.model_executor.models import ModelRegistry; "
    "info = ModelRegistry._try_inspect_model_cls('Molmo2ForConditionalGeneration'); "
    "import molmo2_shim.model.base as base; "
    "print(json.dumps([molmo2_shim.__file__, p.__file__, base.__file__, len(load_matrix()), s.action, s.patch_set, "
    "info is not None]))"
)


def probe(tmp_path: Path, pythonpath: str | None = None) -> list:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "deprecat" not in (proc.stdout + proc.stderr).lower(), "the build tools warn about a deprecation"
    return out


def test_wheel_contents(dist):
    (wheel,) = dist.glob("molmo2_shim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "molmo2_shim/compat_matrix.yaml" in names
    assert "molmo2_shim/patches/catalog.py" in names and "molmo2_shim/patches/v0_11_1/model.py" in names
    for module in ("activation/installer.py", "engine/multimodal.py", "model/base.py", "processing/image.py",
                   "diagnostics/doctor.py"):
        assert f"molmo2_shim/{module}" in names, module
    assert not any(n.startswith("patches/") for n in names), "no global `patches` package"
    matrix = zipfile.ZipFile(wheel).read("molmo2_shim/compat_matrix.yaml").decode()
    assert matrix == (REPO / "compat_matrix.yaml").read_text()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[vllm.general_plugins]" in text and "molmo2_shim = molmo2_shim.plugin:register" in text


def test_sdist_keeps_the_repository_layout(dist):
    (sdist,) = dist.glob("molmo2_shim-*.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"compat_matrix.yaml", "patches/catalog.py", "patches/v0_22/model.py", "molmo2_shim/__init__.py"} <= names


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_package_works_outside_the_repo(dist, tmp_path, kind):
    (archive,) = dist.glob("molmo2_shim-*.whl" if kind == "wheel" else "molmo2_shim-*.tar.gz")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(archive)], check=True, capture_output=True)
    assert not (target / "patches").exists()
    shim, patches, model, rows, action, patch_set, inspected = probe(tmp_path, str(target))
    for path in (shim, patches, model):
        assert path.startswith(str(target)), f"{path}: the installed {kind}, not the checkout, must be imported"
    assert rows >= 5 and action == "installed" and patch_set and inspected


def test_editable_install_maps_the_top_level_folders(tmp_path):
    """The test environments install this checkout editable: patches/ and the matrix are read
    from the repository's top level."""
    shim, patches, model, rows, action, patch_set, inspected = probe(tmp_path)
    assert Path(shim).parent == REPO / "molmo2_shim"
    assert Path(patches).parent == REPO / "patches"
    assert rows >= 5 and action == "installed" and patch_set and inspected
