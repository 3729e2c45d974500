"""Prompt shapes: turn what verl, verl-agent and chat clients send into the original's layout.

Three shapes reach vLLM for a prompt with k images:

1. one `<|image|>` placeholder per image (the chat template's output);
2. no placeholder at all (verl-agent sends the text ids and the images separately);
3. image blocks already expanded (verl's agent loop sends the HF processor's ids).

All three are normalised to shape 1 with the BOS the original prepends; vLLM then replaces
each placeholder with that image's block, so the final ids equal the original processor's
for the conversation. Shape 2 gets the placeholders where the chat template puts them: right
after BOS, as `<|image|>` for one image or `Image 1<|image|>Image 2<|image|>...` for several.
Shape 3 is collapsed to placeholders and re-expanded; the caller checks the re-expansion
reproduces the sent ids exactly.

Image special tokens anywhere else (typed into user text, or a truncated block) are refused:
they would otherwise let text shift image features onto the wrong positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import Molmo2InputError
from .layout import SpecialTokenIds, insert_bos


@dataclass
class NormalizedPrompt:
    ids: list[int]
    shape: str  # "placeholders" | "no-placeholders" | "expanded" | "mixed" | "text"
    expected: list[int] | None = None  # for expanded input: the ids the expansion must reproduce
    inserted_at: list[int] = field(default_factory=list)


def _block_end(ids: Sequence[int], i: int, sp: SpecialTokenIds) -> int | None:
    """If an expanded image block starts at i, the index just past it; else None.

    A block is: start token, low-res rows, <im_end>, <im_start>, high-res rows, <im_end>,
    where rows are <im_patch> runs optionally followed by <im_col>.
    """
    if ids[i] not in (sp.low_res_start, sp.start):
        return None
    body = {sp.patch, sp.col}
    j = i + 1
    for _ in range(2):
        while j < len(ids) and ids[j] in body:
            j += 1
        if j >= len(ids) or ids[j] != sp.end:
            return None
        j += 1
        if _ == 0:
            if j >= len(ids) or ids[j] != sp.start:
                return None
            j += 1
    return j


def collapse_image_blocks(ids: Sequence[int], sp: SpecialTokenIds) -> tuple[list[int], int]:
    """Replace each complete expanded image block by one placeholder."""
    out: list[int] = []
    i = n = 0
    while i < len(ids):
        end = _block_end(ids, i, sp)
        if end is None:
            out.append(ids[i])
            i += 1
        else:
            out.append(sp.image_placeholder)
            n += 1
            i = end
    return out, n


def check_no_stray_tokens(ids: Sequence[int], sp: SpecialTokenIds, where: str) -> None:
    mm = set(sp.mm_token_ids)
    for pos, t in enumerate(ids):
        if t in mm:
            raise Molmo2InputError(
                f"{where} contains the image special token id {t} at position {pos} outside a complete image "
                "block. Molmo2 image tokens can only come from images: remove literal '<im_patch>', "
                "'<im_col>', '<im_start>', '<im_end>', '<low_res_im_start>' (and frame tokens) from the text, "
                "or send the image with a '<|image|>' placeholder."
            )


def normalize_prompt(
    ids: Sequence[int],
    num_images: int,
    num_videos: int,
    sp: SpecialTokenIds,
    label_ids: Callable[[int], list[int]],
    allow_mixed: bool = False,
) -> NormalizedPrompt:
    if num_images and num_videos and not allow_mixed:
        raise Molmo2InputError(
            "Molmo2 takes images or one video per prompt, not both: the original model rejects the mix. "
            "Send the video and the images in separate requests."
        )
    ids = insert_bos(list(ids), sp.bos)
    collapsed, num_expanded = collapse_image_blocks(ids, sp)
    check_no_stray_tokens(collapsed, sp, "the prompt")
    num_placeholders = collapsed.count(sp.image_placeholder)
    shape = "placeholders"
    inserted: list[int] = []
    if num_expanded:
        shape = "expanded" if num_expanded == num_placeholders else "mixed"
    if num_images and num_placeholders == 0:
        shape = "no-placeholders"
        head: list[int] = []
        for i in range(num_images):
            if num_images > 1:
                head += label_ids(i + 1)
            inserted.append(1 + len(head))
            head.append(sp.image_placeholder)
        collapsed = collapsed[:1] + head + collapsed[1:]
    elif num_placeholders > num_images and num_images > 0:
        raise Molmo2InputError(
            f"the prompt has {num_placeholders} '<|image|>' placeholders (or expanded image blocks) but "
            f"{num_images} images were sent; send one image per placeholder, or no placeholder at all to "
            "put every image first as the chat template does"
        )
    elif num_placeholders < num_images:
        raise Molmo2InputError(
            f"the prompt has {num_placeholders} '<|image|>' placeholders but {num_images} images were sent; "
            "use one placeholder per image (the chat template writes them), or none at all"
        )
    if num_videos:
        count = collapsed.count(sp.video_placeholder)
        if count == 0:
            at = _after_image_placeholders(collapsed, sp)
            collapsed = collapsed[:at] + [sp.video_placeholder] * num_videos + collapsed[at:]
            shape = "no-placeholders" if shape in ("placeholders", "no-placeholders") else shape
        elif count != num_videos:
            raise Molmo2InputError(
                f"the prompt has {count} '<|video|>' placeholders but {num_videos} videos were sent"
            )
    if not num_images and not num_videos:
        shape = "text"
    return NormalizedPrompt(collapsed, shape, expected=ids if num_expanded else None, inserted_at=inserted)


def _after_image_placeholders(ids: Sequence[int], sp: SpecialTokenIds) -> int:
    """Where the chat template puts <|video|>: after the last leading image placeholder."""
    last = 0
    for i, t in enumerate(ids):
        if t == sp.image_placeholder:
            last = i
    return last + 1 if sp.image_placeholder in ids else 1


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
