"""A Molmo2 processor that produces the original processor's outputs without remote code.

`Molmo2Processor(text=..., images=..., videos=...)` returns the same keys, ids and tensors as
the hub's processor, bit for bit (input_ids with the BOS it prepends, token_type_ids,
pixel_values, image_token_pooling with per-image local indices, image_grids,
image_num_crops, and the video tensors), for every input the original accepts; an input it
refuses gets a Molmo2InputError that says why. tests/test_processor_differential.py checks
both against the original and lists the few deliberate exceptions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.image_utils import make_flat_list_of_images
from transformers.video_utils import make_batched_videos

from ..errors import Molmo2InputError
from .image import ImageProcessingConfig, ProcessedImage, preprocess_images
from .layout import (
    IMAGE_PLACEHOLDER,
    VIDEO_PLACEHOLDER,
    LayoutFlags,
    SpecialTokenIds,
    frame_prefix,
    frame_tokens,
    image_block,
)
from .video import ProcessedVideo, VideoProcessingConfig, batched_metadata, preprocess_video

_DEFAULT = object()  # return_tensors not passed


@dataclass
class ImageBatch:
    images: list[ProcessedImage]
    pixel_values: torch.Tensor | None = None  # all images' crops in one buffer (each image's is a slice of it)

    def as_dict(self) -> dict[str, torch.Tensor]:
        if not self.images:
            return {}
        pixels = self.pixel_values if self.pixel_values is not None else torch.cat([im.pixel_values for im in self.images])
        return {
            "pixel_values": pixels,
            "image_token_pooling": torch.cat([im.token_pooling for im in self.images]),
            "image_grids": torch.tensor([im.grid for im in self.images], dtype=torch.int64),
            "image_num_crops": torch.tensor([im.num_crops for im in self.images], dtype=torch.int64),
        }


class Molmo2Processor(ProcessorMixin):
    """Tokenizer + image/video preprocessing + token layout, configured from a checkpoint.

    A ProcessorMixin by type (vLLM and transformers check for it) with the hub processor's
    attributes (`image_processor`, `video_processor`, the layout flags), so code written for
    the hub processor, vLLM's native Molmo2 included, can use it; nothing of ProcessorMixin's
    own machinery is used.
    """

    attributes: list[str] = []

    def __init__(
        self,
        tokenizer: Any,
        image_config: ImageProcessingConfig | None = None,
        video_config: VideoProcessingConfig | None = None,
        flags: LayoutFlags | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_config = image_config or ImageProcessingConfig()
        self.video_config = video_config or VideoProcessingConfig()
        self.flags = flags or LayoutFlags()
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.special = SpecialTokenIds.from_tokenizer(tokenizer)

    # The hub processor's attribute names.
    @property
    def image_processor(self) -> ImageProcessingConfig:
        return self.image_config

    @property
    def video_processor(self) -> VideoProcessingConfig:
        return self.video_config

    def __getattr__(self, name: str) -> Any:
        flags = self.__dict__.get("flags")
        if flags is not None and name in LayoutFlags.__dataclass_fields__:
            return getattr(flags, name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Molmo2Processor(flags={self.flags}, image={self.image_config}, video={self.video_config})"

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, tokenizer: Any = None, config: Any = None, **_: Any) -> Molmo2Processor:
        model_dir = Path(model_dir)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        image_cfg = ImageProcessingConfig.from_dict(_read_json(model_dir / "preprocessor_config.json"))
        video_cfg = VideoProcessingConfig.from_dict(_read_json(model_dir / "video_preprocessor_config.json"))
        template = model_dir / "chat_template.jinja"
        return cls(
            tokenizer,
            image_config=image_cfg,
            video_config=video_cfg,
            flags=LayoutFlags.from_checkpoint(model_dir, config),
            chat_template=template.read_text() if template.is_file() else None,
        )

    # -- pieces the vLLM integration reuses -------------------------------------------------

    def image_tokens(self, grid: Sequence[int]) -> list[int]:
        return image_block(grid, self.special, self.flags)

    def process_images(self, images: Sequence[Any]) -> ImageBatch:
        processed, pixels = preprocess_images(images, self.image_config)
        return ImageBatch(processed, pixels)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"]) if text else []

    def expand_placeholders(self, ids: list[int], placeholder: int, blocks: Sequence[list[int]]) -> list[int]:
        """Replace the first len(blocks) occurrences of `placeholder`, left to right.

        Surplus placeholders stay literal and surplus blocks are dropped, as in the original.
        """
        out: list[int] = []
        pending = list(blocks)
        for t in ids:
            if t == placeholder and pending:
                out.extend(pending.pop(0))
            else:
                out.append(t)
        return out

    # -- the original processor's call ------------------------------------------------------

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Sequence[Any] | Any | None = None,
        videos: Sequence[Any] | Any | None = None,
        return_tensors: str | None | object = _DEFAULT,
        **kwargs: Any,
    ) -> BatchFeature:
        """The original processor's outputs for the same arguments, or a Molmo2InputError.

        As the original: `text` is one string or a batch (list) of strings; `images` one image,
        a list, a nested list or a 4-D array of them; `videos` one video or a list of them, with
        `video_metadata` (one per video) and `do_sample_frames`. Every image and video is
        processed; the k-th `<|image|>` / `<|video|>` of the batch, left to right, gets the
        k-th one's tokens, surplus placeholders stay literal tokens. `return_tensors` defaults
        to "pt" (the original's default, None, gives lists and numpy arrays; pass None for that).
        """
        if return_tensors is _DEFAULT:
            return_tensors = "pt"
        texts = _text_batch(text)
        data: dict[str, Any] = {}
        processed = None
        if images is not None:
            batch = self.process_images(flat_images(images))
            processed = batch.images
            data.update(batch.as_dict())
        clips = None
        if videos is not None:
            clips = self.process_videos(
                videos, kwargs.get("video_metadata"), kwargs.get("do_sample_frames", self.video_config.do_sample_frames)
            )
            data.update(_video_dict(clips))
        rows = []
        image_at = video_at = 0
        for t in texts:
            blocks: list[list[int]] = []
            if processed is not None:
                n = t.count(IMAGE_PLACEHOLDER)
                blocks = [self.image_tokens(im.grid) for im in processed[image_at:image_at + n]]
                image_at += n
            video = None
            if clips is not None:
                n = t.count(VIDEO_PLACEHOLDER)
                if n > 1:
                    raise Molmo2InputError(
                        f"a prompt has {n} '<|video|>' placeholders; Molmo2 takes at most one video per prompt"
                    )
                video = clips[video_at] if n and video_at < len(clips) else None
                video_at += n
            rows.append(self.encode(t, blocks, video))
        ids, mask = _with_bos(rows, self.special.bos)
        out: dict[str, Any]
        if return_tensors == "pt" and isinstance(ids[0][0], int):
            # The tensors BatchFeature would make from the lists below, made directly (a third of the cost).
            ids_t = torch.tensor(ids, dtype=torch.int64)
            mm_ids = torch.tensor(self.special.mm_token_ids, dtype=torch.int64)
            out = {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t), "token_type_ids": torch.isin(ids_t, mm_ids)}
        else:
            mm = set(self.special.mm_token_ids)
            out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": [[t in mm for t in row] for row in ids]}
        out.update(data)
        if return_tensors is None:  # the original's lists of ids and numpy arrays
            out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        return BatchFeature(data=out, tensor_type=return_tensors)

    def process_videos(self, videos: Any, video_metadata: Any = None, do_sample_frames: bool | None = None) -> list[ProcessedVideo]:
        """Every video of the original's `videos` argument, with one metadata each."""
        if isinstance(videos, tuple) and len(videos) == 2 and isinstance(videos[1], dict):
            clips = [videos]  # vLLM's (frames, metadata) item
        else:
            if _has_str(videos):
                raise Molmo2InputError(
                    "video paths and URLs are not decoded by molmo2-shim's processor; pass the decoded frames"
                )
            try:
                clips = make_batched_videos(videos)
            except (ValueError, IndexError, TypeError) as exc:
                raise Molmo2InputError(
                    f"videos must be a [frames, H, W, 3] array or tensor, a list of frames, or a list of those ({exc})"
                ) from exc
            if do_sample_frames and self.video_config.do_sample_frames and any(isinstance(c, list) for c in clips):
                # transformers stacks lists of frames only when the batch's first video is one;
                # the original then cannot index (sample) the others and fails.
                raise Molmo2InputError(
                    "with do_sample_frames, send each video of a batch as one [frames, H, W, 3] array (a list of "
                    "frames after an array cannot be sampled by the original)"
                )
        metas = batched_metadata(video_metadata, len(clips))
        return [preprocess_video(v, self.video_config, m, do_sample_frames) for v, m in zip(clips, metas)]

    def encode(self, text: str, image_blocks: Sequence[list[int]], video: ProcessedVideo | None) -> list[int]:
        """Token ids of one prompt with its first len(image_blocks) `<|image|>` and its
        `<|video|>` expanded, as the original gets them by tokenizing the expanded string.

        Image and frame blocks are all special tokens, so they are inserted by id after
        tokenizing; only the text between them is tokenized. The timestamp text before each
        frame is tokenized as part of that text (the first one joins whatever precedes the
        placeholder, e.g. "Watch: 0.0 "), which is what the original's string gives. That
        split needs the placeholders to split text exactly as the blocks' first and last tokens
        do; a tokenizer whose special tokens strip neighbouring spaces gets the full string.
        """
        if not self._plain_special_tokens:
            if video is not None:
                text = text.replace(VIDEO_PLACEHOLDER, self._video_string(video), 1)
            for block in image_blocks:
                text = text.replace(IMAGE_PLACEHOLDER, "".join(self.tokenizer.convert_ids_to_tokens(block)), 1)
            return list(self.tokenizer(text)["input_ids"])
        if video is not None:
            marks = "".join(frame_prefix(i, t) + VIDEO_PLACEHOLDER for i, t in enumerate(video.timestamps))
            text = text.replace(VIDEO_PLACEHOLDER, marks, 1)
        ids = list(self.tokenizer(text)["input_ids"])
        frame = frame_tokens(video.grid[1:], self.special, self.flags) if video is not None else []
        out: list[int] = []
        pending = list(image_blocks)
        for t in ids:
            if t == self.special.image_placeholder and pending:
                out.extend(pending.pop(0))
            elif video is not None and t == self.special.video_placeholder:
                out.extend(frame)  # every <|video|> here is one of the frame marks
            else:
                out.append(t)
        return out

    def _video_string(self, video: ProcessedVideo) -> str:
        frame = "".join(self.tokenizer.convert_ids_to_tokens(frame_tokens(video.grid[1:], self.special, self.flags)))
        return "".join(frame_prefix(i, t) + frame for i, t in enumerate(video.timestamps))

    @functools.cached_property
    def _plain_special_tokens(self) -> bool:
        """Whether the placeholders and the blocks' special tokens split text the same way:
        added tokens that strip no neighbouring space and match the raw text."""
        if getattr(self.tokenizer, "split_special_tokens", False):
            return False
        decoder = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        for key in ("image_placeholder", "video_placeholder", "start", "low_res_start", "frame_start", "end", "frame_end"):
            tok = decoder.get(getattr(self.special, key))
            if tok is None or getattr(tok, "lstrip", True) or getattr(tok, "rstrip", True) or getattr(tok, "single_word", True):
                return False
            if getattr(tok, "normalized", True):
                return False
        return True

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("chat_template", self.chat_template)
        return self.tokenizer.apply_chat_template(conversation, **kwargs)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _text_batch(text: Any) -> list[str]:
    if isinstance(text, str):
        return [text]
    if isinstance(text, list) and text and all(isinstance(t, str) for t in text):
        return list(text)
    raise Molmo2InputError(
        f"text must be a string or a non-empty list of strings (a batch), got {type(text).__name__}"
        + (" (pre-tokenized text is not supported)" if isinstance(text, list) and text else "")
    )


def _has_str(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, list) and any(_has_str(i) for i in x))


def flat_images(images: Any) -> list[Any]:
    """The images of the original's `images` argument, in order: one image, a list, a list of
    lists, or a 4-D array / list of 4-D arrays (a batch), flattened as transformers does."""
    from PIL import Image

    def check(x: Any) -> None:
        if isinstance(x, list):
            for i in x:
                check(i)
        elif isinstance(x, str):
            raise Molmo2InputError(
                "image paths and URLs are not loaded by molmo2-shim's processor; pass the PIL image (Image.open)"
            )
        elif not isinstance(x, (Image.Image, np.ndarray, torch.Tensor)):
            raise Molmo2InputError(
                f"unsupported image type {type(x).__name__}; pass a PIL image, an HxWx3 array or tensor, or a list of them"
            )

    check(images)
    try:
        flat = make_flat_list_of_images(images)
    except ValueError as exc:  # its message prints whole arrays: name the shapes instead
        raise Molmo2InputError(
            "images must be PIL images or HxWx3 arrays / tensors, lists of them, or a 4-D batch array; got "
            + _shapes(images)
        ) from exc
    if len(flat) == 0:
        raise Molmo2InputError(
            "images is an empty list; the original processor refuses it. Pass images=None for a prompt without images"
        )
    return list(flat)


def _shapes(x: Any) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(_shapes(i) for i in x[:8]) + (", ..." if len(x) > 8 else "") + "]"
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _video_dict(clips: list[ProcessedVideo]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values_videos": torch.cat([c.pixel_values for c in clips]),
        "video_token_pooling": torch.cat([c.token_pooling for c in clips]),
        "video_grids": torch.tensor([c.grid for c in clips], dtype=torch.int64),
    }


def _with_bos(rows: list[list[int]], bos: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """The original's BOS rule over a batch it stacks without padding.

    Rows of different lengths cannot be stacked (the original fails there). If every row
    already starts with BOS, nothing changes; otherwise EVERY row gets one prepended (a row
    that started with BOS then has two). Empty rows become just BOS, as floats: the original
    builds them from `np.array([[]])`, whose dtype is float64.
    """
    if len({len(r) for r in rows}) > 1:
        raise Molmo2InputError(
            f"the batch's prompts have different lengths ({sorted({len(r) for r in rows})} tokens); the original "
            "processor stacks them without padding and fails. Send prompts of one length, or one prompt per call"
        )
    if not rows[0]:
        return [[float(bos)] for _ in rows], [[1.0] for _ in rows]
    if not all(r[0] == bos for r in rows):
        rows = [[bos, *r] for r in rows]
    return rows, [[1] * len(r) for r in rows]
