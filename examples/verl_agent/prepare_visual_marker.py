"""verl-agent's data files for a visual environment, without images.

verl-agent's own `examples.data_preprocess.prepare --mode visual` downloads geometry3k and stores
its images, only to mark the modality and the number of episodes (the environment produces the
real observations). Molmo2's processor expands those images to up to ~1400 tokens, and verl's
dataset then raises on max_prompt_length before the rows are thrown away. These files carry the
same marker prompt and no images.

    python prepare_visual_marker.py --train 256 --val 64 --out ~/data/verl-agent/visual
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def rows(n: int, split: str) -> pd.DataFrame:
    return pd.DataFrame({
        "data_source": ["visual"] * n,
        "prompt": [[{"role": "user", "content": "<image>"}] for _ in range(n)],
        "ability": ["agent"] * n,
        "extra_info": [{"split": split, "index": i} for i in range(n)],
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path.home() / "data" / "verl-agent" / "visual")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows(args.train, "train").to_parquet(args.out / "train.parquet")
    rows(args.val, "test").to_parquet(args.out / "test.parquet")


if __name__ == "__main__":
    main()
