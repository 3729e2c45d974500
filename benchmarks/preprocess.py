"""Image preprocessing speed: molmo2-shim's processor vs the reference processor, side by side.

    python tools/testenv.py reference          # HF transformers 5 environment (once)
    $(python tools/testenv.py reference) benchmarks/preprocess.py [--rounds 20] [--smoke]

The reference is HF transformers' native Molmo2 image processor (>= 5.20), the installable
stand-in for the original processor (same algorithm; it resizes in float and rounds back,
the original resizes uint8 tensors, and normalises in another order, so its pixels can
differ from the original's by one float32 ulp; pooling indices and grids must be identical).
Both run in this one process, interleaved round by round, so the ratio is robust to the
machine's noise; absolute times are printed for context only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import golden  # noqa: E402
from molmo2_shim.processing.image import ImageProcessingConfig, preprocess_image  # noqa: E402

SIZES = [(378, 378), (640, 480), (480, 640), (1024, 768), (1920, 1080), (100, 2000), (2000, 100)]


def reference_processor():
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(golden.CHECKPOINT), trust_remote_code=False)


def run_ours(image, cfg):
    out = preprocess_image(image, cfg)
    return out.pixel_values, out.token_pooling, list(out.grid)


def run_reference(image, proc):
    out = proc(images=[image], return_tensors="pt")
    return out["pixel_values"], out["image_token_pooling"], out["image_grids"][0].tolist()


def difference(a, b) -> float | None:
    """Max |pixel difference|, or None if pooling indices or grids differ at all."""
    if not (torch.equal(a[1].long(), b[1].long()) and a[2] == b[2] and a[0].shape == b[0].shape):
        return None
    return float((a[0] - b[0]).abs().max())


# HF's native processor normalises in another order than the original: half its pixels differ
# from the original's by one float32 ulp (<= 6e-8). The shim matches the original bit for bit
# (tests/test_processor.py, sha256 per crop); against HF the check is this tolerance.
HF_ULP = 1e-6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="one round, two sizes (CI)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    sizes = SIZES[:2] if args.smoke else SIZES
    rounds = 1 if args.smoke else args.rounds
    cfg = ImageProcessingConfig.from_dict(json.loads((golden.CHECKPOINT / "preprocessor_config.json").read_text()))
    ref = reference_processor()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for w, h in sizes:
        image = golden.pil_image("rgb", w, h, 11)
        ours_out, ref_out = run_ours(image, cfg), run_reference(image, ref)  # also warms both up
        diff = difference(ours_out, ref_out)
        identical = diff is not None and diff <= HF_ULP
        t_ours, t_ref = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            run_ours(image, cfg)
            t_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            run_reference(image, ref)
            t_ref.append(time.perf_counter() - start)
        ours, theirs = statistics.median(t_ours), statistics.median(t_ref)
        rows.append({"size": f"{w}x{h}", "crops": int(ours_out[0].shape[0]), "shim_ms": ours * 1e3,
                     "reference_ms": theirs * 1e3, "speedup": theirs / ours, "identical": identical,
                     "max_pixel_diff": diff})
    print(f"{'image':>10} {'crops':>5} {'shim ms':>9} {'ref ms':>9} {'speedup':>8}  same output (max |d pixel|)")
    for r in rows:
        print(f"{r['size']:>10} {r['crops']:>5} {r['shim_ms']:>9.2f} {r['reference_ms']:>9.2f} {r['speedup']:>7.2f}x  "
              f"{r['identical']} ({r['max_pixel_diff']})")
    total = sum(r["reference_ms"] for r in rows) / sum(r["shim_ms"] for r in rows)
    print(f"images/s ratio over the set (shim / reference): {total:.2f}x  torch threads: {torch.get_num_threads()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "overall_speedup": total}, indent=1))
    if not all(r["identical"] for r in rows):
        print("outputs differ from the reference processor", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
