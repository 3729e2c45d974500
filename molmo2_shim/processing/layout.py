"""Token layout of the original Molmo2 processor: special token ids and image/video blocks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

IMAGE_PLACEHOLDER = "<|image|>"
VIDEO_PLACEHOLDER = "<|video|>"

# Token strings the layout needs; every id is read from the tokenizer, never assumed.
TOKEN_STRINGS = {
    "patch": "<im_patch>",
    "low": "<im_low>",
    "start": "<im_start>",
    "low_res_start": "<low_res_im_start>",
    "frame_start": "<frame_start>",
    "end": "<im_end>",
    "frame_end": "<frame_end>",
    "col": "<im_col>",
    "image_placeholder": IMAGE_PLACEHOLDER,
    "video_placeholder": VIDEO_PLACEHOLDER,
}
# config.json attribute that must agree with the tokenizer for each token, where it has one.
CONFIG_ID_FIELDS = {
    "patch": "image_patch_id",
    "low": "image_low_res_id",
    "start": "image_start_token_id",
    "low_res_start": "low_res_image_start_token_id",
    "frame_start": "frame_start_token_id",
    "end": "image_end_token_id",
    "frame_end": "frame_end_token_id",
    "col": "image_col_id",
}
# Tokens the original marks with token_type_ids = 1: they attend bidirectionally among
# themselves at prefill. The two placeholders are not among them.
MM_TOKEN_KEYS = ("patch", "col", "start", "low_res_start", "frame_start", "end", "frame_end", "low")


@dataclass(frozen=True)
class SpecialTokenIds:
    patch: int
    low: int
    start: int
    low_res_start: int
    frame_start: int
    end: int
    frame_end: int
    col: int
    image_placeholder: int
    video_placeholder: int
    bos: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialTokenIds:
        vocab = tokenizer.get_vocab()
        missing = [s for s in TOKEN_STRINGS.values() if s not in vocab]
        if missing:
            raise ValueError(
                f"the tokenizer lacks Molmo2 special tokens {missing}; use the checkpoint's own tokenizer"
            )
        # The original's rule, Python `or` included: a BOS id of 0 (or None) falls through to EOS.
        bos = tokenizer.bos_token_id or tokenizer.eos_token_id
        if bos is None:
            raise ValueError("the tokenizer defines neither a BOS nor an EOS token; Molmo2 prompts start with BOS")
        return cls(**{k: int(vocab[s]) for k, s in TOKEN_STRINGS.items()}, bos=int(bos))

    @property
    def mm_token_ids(self) -> tuple[int, ...]:
        return tuple(getattr(self, k) for k in MM_TOKEN_KEYS)

    @property
    def all_special_ids(self) -> frozenset[int]:
        return frozenset(getattr(self, f.name) for f in fields(self) if f.name != "bos")


@dataclass(frozen=True)
class LayoutFlags:
    """processor_config.json flags; defaults are the released checkpoints' values."""

    image_use_col_tokens: bool = True
    use_single_crop_col_tokens: bool | None = False
    use_single_crop_start_token: bool = True
    video_use_col_tokens: bool = False
    use_frame_special_tokens: bool = False

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path, config: Any = None) -> LayoutFlags:
        path = Path(model_dir) / "processor_config.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "use_frame_special_tokens" not in values and config is not None:
            top = getattr(config, "use_frame_special_tokens", None)
            if top is not None:
                values["use_frame_special_tokens"] = bool(top)
        return cls(**values)

    @property
    def low_res_col_tokens(self) -> bool:
        if self.use_single_crop_col_tokens is None:
            return self.image_use_col_tokens
        return bool(self.use_single_crop_col_tokens)


def image_block(grid: Sequence[int], ids: SpecialTokenIds, flags: LayoutFlags) -> list[int]:
    """Token ids that replace one <|image|>: the low-res view, then the high-res mosaic."""
    low_rows, low_cols, rows, cols = (int(g) for g in grid)
    low_row = [ids.patch] * low_cols + ([ids.col] if flags.low_res_col_tokens else [])
    high_row = [ids.patch] * cols + ([ids.col] if flags.image_use_col_tokens else [])
    first = ids.low_res_start if flags.use_single_crop_start_token else ids.start
    return [first, *low_row * low_rows, ids.end, ids.start, *high_row * rows, ids.end]


def frame_tokens(grid_hw: Sequence[int], ids: SpecialTokenIds, flags: LayoutFlags) -> list[int]:
    rows, cols = (int(g) for g in grid_hw)
    row = [ids.patch] * cols + ([ids.col] if flags.video_use_col_tokens else [])
    if flags.use_frame_special_tokens:
        return [ids.frame_start, *row * rows, ids.frame_end]
    return [ids.start, *row * rows, ids.end]


def frame_prefix(index: int, timestamp: float) -> str:
    """Text before each video frame: the time with one decimal, spaces around it."""
    return f"{' ' if index else ''}{timestamp:.1f} "


def num_image_tokens(grid: Sequence[int], flags: LayoutFlags) -> int:
    low_rows, low_cols, rows, cols = (int(g) for g in grid)
    low = low_rows * (low_cols + int(flags.low_res_col_tokens))
    high = rows * (cols + int(flags.image_use_col_tokens))
    return low + high + 4


def insert_bos(ids: list[int], bos: int) -> list[int]:
    """The original prepends BOS unless the sequence already starts with it."""
    return ids if ids and ids[0] == bos else [bos, *ids]


def mm_token_mask(ids: Iterable[int], special: SpecialTokenIds) -> list[bool]:
    mm = set(special.mm_token_ids)
    return [t in mm for t in ids]
