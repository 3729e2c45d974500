"""Access to the golden fixtures (outputs of the original Molmo2 implementation).

See tests/fixtures/README.md for where they come from. The synthetic images are regenerated
from the recipe the fixtures were made with; `input_sha256_uint8` proves the regeneration.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINT = FIXTURES / "molmo2-tiny"
GOLDEN = FIXTURES / "golden"

# Tolerances the golden README gives for an independent float32 implementation.
LOGITS_ATOL = 2e-3
LOGITS_RTOL = 1e-3
# What the shim's engines are held to (float32, CPU): max |logit difference| over every prompt
# position and vocabulary entry, up to each position's constant. Measured: about 1.5e-5.
ENGINE_LOGIT_TOLERANCE = 1e-4


@lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    return json.loads((GOLDEN / "manifest.json").read_text())


def model_case(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"model_{name}.npz") as z:
        return {k: z[k] for k in z.files}


def index_arrays() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "processor_index_arrays.npz") as z:
        return {k: z[k] for k in z.files}


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    return x, y


def synth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    x, y = _grid(width, height)
    s = seed % 7
    chans = [
        (x * (3 + c + s) + y * (5 + 2 * c + s) + (x * y) // (7 + c) + 41 * c + 17 * s) % 256 for c in range(3)
    ]
    return np.stack(chans, axis=-1).astype(np.uint8)


def synth_gray(width: int, height: int, seed: int) -> np.ndarray:
    x, y = _grid(width, height)
    return ((2 * x + 3 * y + (x * y) // 11 + 13 * (seed % 7)) % 256).astype(np.uint8)


def synth_rgba(width: int, height: int, seed: int) -> np.ndarray:
    x, y = _grid(width, height)
    alpha = ((x + 2 * y) % 256).astype(np.uint8)
    return np.concatenate([synth_rgb(width, height, seed), alpha[..., None]], axis=-1)


def synth_video(frames: int, width: int, height: int, seed: int) -> np.ndarray:
    return np.stack([np.roll(synth_rgb(width, height, seed + t), 9 * t, axis=1) for t in range(frames)])


def distinct_image(width: int, height: int, seed: int):
    """An RGB image of its own for every seed (pil_image's patterns repeat every 7 seeds, so a
    benchmark that wants new images, with no processor, encoder or prefix cache hits, uses this)."""
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def pil_image(kind: str, width: int, height: int, seed: int):
    from PIL import Image

    if kind == "rgb":
        return Image.fromarray(synth_rgb(width, height, seed), "RGB")
    if kind == "gray":
        return Image.fromarray(synth_gray(width, height, seed), "L")
    if kind == "rgba":
        return Image.fromarray(synth_rgba(width, height, seed), "RGBA")
    raise ValueError(kind)


def processor_case_image(name: str):
    case = manifest()["processor_cases"]["images"][name]
    img = pil_image(case["kind"], case["width"], case["height"], manifest_seed())
    assert sha256(np.asarray(img)) == case["input_sha256_uint8"], f"regenerated {name} differs from the golden input"
    return img


def manifest_seed() -> int:
    return 1234


def model_case_images(name: str) -> list:
    sources = manifest()["model_cases"][name]["sources"]
    return [pil_image(kind, w, h, seed) for kind, w, h, seed in sources.get("images", [])]


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def sha256_f32(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def rle_to_tokens(rle: list) -> list[str]:
    return [tok for tok, n in rle for _ in range(n)]


def request_from_case(case: dict[str, Any]) -> dict[str, Any]:
    """A vLLM request for a case recorded by tools/make_golden.py (prompt + synthetic sources)."""
    request: dict[str, Any] = {"prompt": case["prompt"]}
    images = [pil_image(s["kind"], s["width"], s["height"], s["seed"]) for s in case["sources"] if s["kind"] != "video"]
    if images:
        request["multi_modal_data"] = {"image": images}
    for s in (s for s in case["sources"] if s["kind"] == "video"):
        frames = synth_video(s["frames"], s["width"], s["height"], s["seed"])
        request["multi_modal_data"] = {"video": (frames, {"fps": s["fps"], "frames_indices": s["frames_indices"]})}
    return request


FAMILY = FIXTURES / "family"


def family_structures() -> list[str]:
    return sorted(p.name for p in FAMILY.iterdir() if (p / "manifest.json").is_file())


def family_manifest(structure: str) -> dict[str, Any]:
    return json.loads((FAMILY / structure / "manifest.json").read_text())


def family_case(structure: str, case: str) -> dict[str, np.ndarray]:
    with np.load(FAMILY / structure / "golden" / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}
