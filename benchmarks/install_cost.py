"""What install() adds on top of vLLM, and what `import molmo2_shim.auto` costs.

    $(make python) benchmarks/install_cost.py [--repeats 7]

Each figure is the median over fresh interpreters, measured side by side in one run:
  vllm         import vllm + vLLM's model registry (every vLLM process loads both)
  install()    the same, then molmo2_shim.install()
  auto         the same, then import molmo2_shim.auto
Also checks that install() initialises no CUDA and imports no model code.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BASE = "import time, vllm\nfrom vllm.model_executor.models import ModelRegistry\nt = time.perf_counter()\n"
PROBES = {
    "install()": BASE + "import molmo2_shim; molmo2_shim.install()\n",
    "auto": BASE + "import molmo2_shim.auto\n",
}
TAIL = ("dt = time.perf_counter() - t\nimport sys, torch\n"
        "model = [m for m in sys.modules if m.startswith('molmo2_shim.model')]\n"
        "print('RESULT', dt, torch.cuda.is_initialized(), len(model))\n")


# As after `pip install`: bytecode compiled, and the children allowed to use it (some
# machines set PYTHONDONTWRITEBYTECODE, which would otherwise add compile time to each run).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(code: str) -> tuple[float, bool, int]:
    out = subprocess.run([sys.executable, "-c", code + TAIL], capture_output=True, text=True, check=True,
                         env=ENV).stdout
    _, dt, cuda, model = [line for line in out.splitlines() if line.startswith("RESULT")][-1].split()
    return float(dt), cuda == "True", int(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "molmo2_shim"), quiet=1)
    results = {}
    for name, code in PROBES.items():
        runs = [measure(code) for _ in range(args.repeats)]
        results[name] = {"median_ms": statistics.median(r[0] for r in runs) * 1e3,
                         "cuda_initialised": any(r[1] for r in runs), "model_modules": max(r[2] for r in runs)}
    for name, r in results.items():
        print(f"{name:>10}: +{r['median_ms']:.1f} ms on top of import vllm + registry; "
              f"CUDA initialised: {r['cuda_initialised']}; model modules imported: {r['model_modules']}")
    if args.json:
        open(args.json, "w").write(json.dumps(results, indent=1))
    return 0 if not any(r["cuda_initialised"] or r["model_modules"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
