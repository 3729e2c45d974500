"""Describe a Molmo2 token sequence: where each image's and video's tokens are."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..processing.layout import SpecialTokenIds


@dataclass
class Span:
    kind: str  # "bos" | "text" | "image" | "video-frame" | "placeholder"
    start: int
    end: int  # exclusive
    detail: dict[str, Any]

    @property
    def length(self) -> int:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "length": self.length}


def _rows(ids: Sequence[int], i: int, sp: SpecialTokenIds) -> tuple[int, int, bool, int]:
    """Parse <im_patch>/<im_col> rows from i; returns (rows, cols, col_tokens, next index)."""
    rows = cols = 0
    col_tokens = False
    run = 0
    while i < len(ids) and ids[i] in (sp.patch, sp.col):
        if ids[i] == sp.patch:
            run += 1
        else:
            col_tokens = True
            rows += 1
            cols = max(cols, run)
            run = 0
        i += 1
    if run:
        rows += 1
        cols = max(cols, run)
    if not col_tokens and rows == 1 and cols:
        # Rows without <im_col> are not delimited; the low-res crop's grid is square.
        side = math.isqrt(cols)
        return (side, side, False, i) if side * side == cols else (1, cols, False, i)
    return rows, cols, col_tokens, i


def describe(ids: Sequence[int], sp: SpecialTokenIds) -> list[Span]:
    spans: list[Span] = []
    i = 0
    text_start: int | None = None

    def close_text(at: int) -> None:
        nonlocal text_start
        if text_start is not None and at > text_start:
            spans.append(Span("text", text_start, at, {}))
        text_start = None

    while i < len(ids):
        t = ids[i]
        if i == 0 and t == sp.bos:
            spans.append(Span("bos", 0, 1, {}))
            i = 1
            continue
        if t in (sp.image_placeholder, sp.video_placeholder):
            close_text(i)
            spans.append(Span("placeholder", i, i + 1, {"token": "image" if t == sp.image_placeholder else "video"}))
            i += 1
            continue
        if t in (sp.low_res_start, sp.start, sp.frame_start):
            close_text(i)
            start = i
            low_rows, low_cols, low_col_tok, j = _rows(ids, i + 1, sp)
            closing = sp.frame_end if t == sp.frame_start else sp.end
            if j < len(ids) and ids[j] == closing and j + 1 < len(ids) and ids[j + 1] == sp.start and t != sp.frame_start:
                rows, cols, col_tok, k = _rows(ids, j + 2, sp)
                if k < len(ids) and ids[k] == sp.end:
                    patches = sum(1 for x in ids[start:k + 1] if x == sp.patch)
                    spans.append(Span("image", start, k + 1, {
                        "low_res": [low_rows, low_cols], "low_res_col_tokens": low_col_tok,
                        "high_res": [rows, cols], "high_res_col_tokens": col_tok, "patch_tokens": patches,
                    }))
                    i = k + 1
                    continue
            if j < len(ids) and ids[j] == closing:
                patches = sum(1 for x in ids[start:j + 1] if x == sp.patch)
                spans.append(Span("video-frame", start, j + 1, {"grid": [low_rows, low_cols], "patch_tokens": patches}))
                i = j + 1
                continue
        if text_start is None:
            text_start = i
        i += 1
    close_text(len(ids))
    return spans


def format_spans(spans: Sequence[Span], limit: int | None = None) -> str:
    lines = []
    images = frames = 0
    for s in spans:
        if s.kind == "image":
            images += 1
            d = s.detail
            lines.append(
                f"  [{s.start:>5}, {s.end:>5})  image {images}: {s.length} tokens = low-res {d['low_res'][0]}x{d['low_res'][1]}"
                f"{' +col' if d['low_res_col_tokens'] else ''} + high-res {d['high_res'][0]}x{d['high_res'][1]}"
                f"{' +col' if d['high_res_col_tokens'] else ''} ({d['patch_tokens']} <im_patch> tokens get image features)"
            )
        elif s.kind == "video-frame":
            frames += 1
            lines.append(f"  [{s.start:>5}, {s.end:>5})  video frame {frames}: {s.detail['grid'][0]}x{s.detail['grid'][1]} pooled patches")
        else:
            lines.append(f"  [{s.start:>5}, {s.end:>5})  {s.kind}" + (f" ({s.detail['token']})" if s.detail else ""))
    if limit is not None and len(lines) > limit:
        lines = lines[: limit - 1] + [f"  ... {len(lines) - limit + 1} more spans"]
    return "\n".join(lines)
