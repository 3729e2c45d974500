"""Concurrent chat requests with images against `vllm serve` (tiny checkpoint, CPU).

    $(make python) benchmarks/load.py [--requests 200] [--concurrency 200]

Reports failures, whether the server process restarted or went unhealthy, and latency
percentiles. CI runs a 40-request version (tests/test_robustness.py).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import golden  # noqa: E402
from serve_helpers import is_healthy, vllm_server  # noqa: E402


def png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--output-tokens", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from openai import OpenAI

    images = [png(golden.pil_image("rgb", 200 + 40 * (i % 7), 150 + 30 * (i % 5), i)) for i in range(16)]
    with tempfile.TemporaryDirectory() as tmp, vllm_server(Path(tmp), "--max-num-seqs", "64") as server:
        client = OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0, timeout=3600)
        pid = server["proc"].pid

        def one(i: int) -> tuple[bool, float, str]:
            start = time.perf_counter()
            try:
                client.chat.completions.create(
                    model="molmo2-tiny", temperature=0, max_tokens=args.output_tokens, extra_body={"ignore_eos": True},
                    messages=[{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": images[i % len(images)]}},
                        {"type": "text", "text": f"Describe picture {i}."}]}])
                return True, time.perf_counter() - start, ""
            except Exception as exc:  # counted, not raised: the point is to count them
                return False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - start
        healthy = is_healthy(server["base"])
        restarted = server["proc"].poll() is not None or server["proc"].pid != pid
    latencies = sorted(t for ok, t, _ in results if ok)
    failures = [err for ok, _, err in results if not ok]

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))] if latencies else float("nan")

    summary = {"requests": args.requests, "concurrency": args.concurrency, "failures": len(failures),
               "restarted": restarted, "healthy_after": healthy, "wall_s": wall,
               "p50_s": pct(50), "p90_s": pct(90), "p99_s": pct(99), "first_failure": failures[0] if failures else None}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if not failures and not restarted and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
