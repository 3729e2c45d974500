"""A Molmo2 processor that produces the original processor's outputs without remote code.

`Molmo2Processor(text=..., images=...)` returns the same keys, ids and tensors as the hub's
processor (input_ids with the BOS it prepends, token_type_ids, pixel_values,
image_token_pooling with per-image local indices, image_grids, image_num_crops).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin

from .image import ImageProcessingConfig, ProcessedImage, preprocess_image
from .layout import (
    LayoutFlags,
    SpecialTokenIds,
    image_block,
    insert_bos,
    mm_token_mask,
)
from .video import VideoProcessingConfig, preprocess_video, video_token_ids


@dataclass
class ImageBatch:
    images: list[ProcessedImage]

    def as_dict(self) -> dict[str, torch.Tensor]:
        if not self.images:
            return {}
        return {
            "pixel_values": torch.cat([im.pixel_values for im in self.images]),
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
        return ImageBatch([preprocess_image(im, self.image_config) for im in images])

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
        text: str | None = None,
        images: Sequence[Any] | Any | None = None,
        videos: Sequence[Any] | Any | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        if images and all(isinstance(i, (list, tuple)) for i in images):
            images = [im for group in images for im in group]  # batched as [[img, ...]]
        if videos is not None and not isinstance(videos, (list, tuple)):
            videos = [videos]
        data: dict[str, Any] = {}
        ids = self.tokenize(text or "")
        if images:
            batch = self.process_images(images)
            data.update(batch.as_dict())
            blocks = [self.image_tokens(im.grid) for im in batch.images]
            ids = self.expand_placeholders(ids, self.special.image_placeholder, blocks)
        videos = [v for v in videos or [] if v is not None]
        if videos:
            if len(videos) > 1:
                raise ValueError("Molmo2 takes at most one video per prompt")
            video = preprocess_video(
                videos[0], self.video_config, kwargs.get("video_metadata"),
                kwargs.get("do_sample_frames", self.video_config.do_sample_frames),
            )
            data.update(video.as_dict())
            ids = self.expand_placeholders(
                ids, self.special.video_placeholder, [video_token_ids(video, self.tokenizer, self.special, self.flags)]
            )
        ids = insert_bos(ids, self.special.bos)
        data["input_ids"] = [ids]
        data["attention_mask"] = [[1] * len(ids)]
        data["token_type_ids"] = [mm_token_mask(ids, self.special)]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("chat_template", self.chat_template)
        return self.tokenizer.apply_chat_template(conversation, **kwargs)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
