"""Copy the parity oracle into tests/fixtures, trimmed to what the tests read.

The golden data (a tiny random Molmo2 checkpoint plus outputs of the ORIGINAL Molmo2
remote code on it) is produced outside this repository. This script records how the
committed fixtures were derived from it:

    python tools/trim_golden.py GOLDEN_DIR

GOLDEN_DIR holds ``molmo2-tiny/`` and ``cases/`` (manifest.json, *.npz) as described in its
README. What is dropped: full float pixel tensors (the tests check our processor's output
against the golden sha256 of each crop instead, and regenerate the synthetic images from
their recipe), the causal-mask logits, attention masks, and per-tensor init metadata.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures"

MODEL_CASE_KEYS = {
    "input_ids": np.int32,
    "token_type_ids": np.bool_,
    "image_token_pooling": np.int32,
    "image_grids": np.int32,
    "image_num_crops": np.int32,
    "video_token_pooling": np.int32,
    "video_grids": np.int32,
    "logits_bidir": np.float32,
    "image_hidden_states": np.float32,
    "generate_bidir": np.int32,
}
MANIFEST_MODEL_FIELDS = [
    "prompt", "sources", "seq_len", "num_im_patch",
    "generate_bidir_ids", "generate_bidir_top1_minus_top2",
    "bidir_vs_causal", "per_image_run_bidir_variant",
]
MANIFEST_PROCESSOR_FIELDS = [
    "kind", "pil_mode", "width", "height", "input_sha256_uint8", "image_grids",
    "image_num_crops", "pixel_values_shape", "per_crop", "pixel_values_sha256_f32",
    "image_tokens_rle", "num_image_tokens", "num_patch_tokens",
    "processor_input_ids_with_bare_placeholder", "alt_remote_defaults_no_processor_config",
]


def sha256_f32(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def main(golden: Path) -> None:
    manifest = json.loads((golden / "cases" / "manifest.json").read_text())
    ckpt_out = OUT / "molmo2-tiny"
    if ckpt_out.exists():
        shutil.rmtree(ckpt_out)
    shutil.copytree(golden / "molmo2-tiny", ckpt_out)

    cases_out = OUT / "golden"
    cases_out.mkdir(parents=True, exist_ok=True)
    trimmed: dict = {
        "source": "golden fixtures of the original Molmo2 remote code (see tests/fixtures/README.md)",
        "versions": manifest["versions"],
        "remote_code_sha256": manifest["remote_code_sha256"],
        "tokenizer": manifest["tokenizer"],
        "processor_flags": manifest["processor_flags"],
        "processor_cases": {
            "images": {
                name: {k: case[k] for k in MANIFEST_PROCESSOR_FIELDS if k in case}
                for name, case in manifest["processor_cases"]["images"].items()
            },
            "edge_cases": manifest["processor_cases"]["edge_cases"],
        },
        "model_cases": {},
    }
    for name, case in manifest["model_cases"].items():
        src = np.load(golden / "cases" / f"model_{name}.npz")
        arrays = {k: src[k].astype(t) for k, t in MODEL_CASE_KEYS.items() if k in src.files}
        for k in arrays:
            if arrays[k].ndim >= 2 and arrays[k].shape[0] == 1 and k in ("input_ids", "token_type_ids", "logits_bidir"):
                arrays[k] = arrays[k][0]
        np.savez_compressed(cases_out / f"model_{name}.npz", **arrays)
        entry = {k: case[k] for k in MANIFEST_MODEL_FIELDS if k in case}
        for pix in ("pixel_values", "pixel_values_videos"):
            if pix in src.files:
                entry[f"{pix}_sha256_f32"] = sha256_f32(src[pix])
                entry[f"{pix}_shape"] = list(src[pix].shape)
        trimmed["model_cases"][name] = entry
    shutil.copy(golden / "cases" / "processor_index_arrays.npz", cases_out / "processor_index_arrays.npz")
    (cases_out / "manifest.json").write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
