"""vLLM multimodal processing for Molmo2: processing info, dummy inputs and the processor.

Shared by every patch set. The HF-side work is molmo2_shim.processing, which reproduces the
original processor without remote code. What this changes in vLLM's processing, and why, is
listed in the patch catalog (molmo2_shim.patches.catalog): the prompt normalisation in
`apply`, `_hf_processor_applies_updates`, `_hash_mm_items`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageSize, MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdateDetails,
)

from ..errors import Molmo2InputError
from ..processing.config import image_attention_is_bidirectional
from ..processing.image import image_grid_for_size, size_with_most_tokens
from ..processing.layout import frame_prefix, insert_bos, num_image_tokens
from ..processing.processor import Molmo2Processor
from ..processing.prompt import NormalizedPrompt, first_difference, normalize_prompt
from ..processing.video import frame_block_length, frames_and_timestamps, preprocess_frames, video_tokens_for
from .exactness import RegionBounds
from .features import dummy_inputs_builder_class
from .identifiers import joint_identifiers, region_digest

BaseDummyInputsBuilder = dummy_inputs_builder_class()

_REGION_SALT: contextvars.ContextVar[bytes] = contextvars.ContextVar("molmo2_region_salt", default=b"")


def checkpoint_dir(model: str, revision: str | None = None) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, allow_patterns=["*.json", "*.jinja"]))


_PROCESSORS: dict[tuple[str, str | None, int], Molmo2Processor] = {}


def _processor(model: str, revision: str | None, tokenizer: Any, config: Any) -> Molmo2Processor:
    """One processor per checkpoint and tokenizer object (vLLM asks for it on every request)."""
    key = (model, revision, id(tokenizer))
    proc = _PROCESSORS.get(key)
    if proc is None or proc.tokenizer is not tokenizer:
        proc = Molmo2Processor.from_pretrained(checkpoint_dir(model, revision), tokenizer=tokenizer, config=config)
        _PROCESSORS[key] = proc
    return proc


class Molmo2ProcessingInfo(BaseProcessingInfo):
    def get_hf_processor(self, **kwargs: object) -> Molmo2Processor:
        mc = self.ctx.model_config
        return _processor(mc.model, getattr(mc, "revision", None), self.get_tokenizer(), self.get_hf_config())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": 1}

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        proc = self.get_hf_processor()
        grid = image_grid_for_size(image_height, image_width, proc.image_config)
        return num_image_tokens(grid, proc.flags)

    def get_image_size_with_most_features(self) -> ImageSize:
        proc = self.get_hf_processor()
        h, w, _ = size_with_most_tokens(proc.image_config, lambda g: num_image_tokens(g, proc.flags))
        return ImageSize(width=w, height=h)

    def get_num_frames_with_most_features(self, seq_len: int) -> int:
        proc = self.get_hf_processor()
        cfg = proc.video_config
        block = frame_block_length(cfg, proc.special, proc.flags)
        # The longest timestamp text, that of the last frame the limits allow.
        stamp = len(proc.tokenize(frame_prefix(1, cfg.num_frames / cfg.max_fps)))
        return max(1, min(cfg.num_frames, seq_len // (block + stamp)))


class ProfilingData(dict):
    """The dummy items vLLM profiles with. Some versions (0.11.x) profile every modality in one
    prompt, a mix the original refuses from users; the processor lets only this object through."""


class Molmo2DummyInputsBuilder(BaseDummyInputsBuilder[Molmo2ProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        images = mm_counts.get("image", 0)
        text = "<|image|>" if images == 1 else "".join(f"Image {i + 1}<|image|>" for i in range(images))
        return text + "<|video|>" * mm_counts.get("video", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None) -> dict[str, Any]:
        size = self.info.get_image_size_with_most_features()
        data: dict[str, Any] = {
            "image": self._get_dummy_images(width=size.width, height=size.height, num_images=mm_counts.get("image", 0)),
        }
        videos = mm_counts.get("video", 0)
        if videos:
            crop = self.info.get_hf_processor().video_config.frame.crop_size
            frames = self.info.get_num_frames_with_most_features(seq_len)
            # Built here rather than with vLLM's helper: 0.11.0's helper makes int64 frames.
            data["video"] = [
                (np.full((frames, crop, crop, 3), 255, dtype=np.uint8), {"fps": 2.0, "frames_indices": list(range(frames))})
                for _ in range(videos)
            ]
        return ProfilingData(data)


class Molmo2MultiModalProcessor(BaseMultiModalProcessor[Molmo2ProcessingInfo]):
    def _get_data_parser(self) -> MultiModalDataParser:
        return MultiModalDataParser(video_needs_metadata=True)

    # -- prompt normalisation -----------------------------------------------------------------

    def normalize(
        self, prompt: Any, counts: Mapping[str, int], profiling: bool = False
    ) -> tuple[NormalizedPrompt, bytes]:
        """The prompt in the original's layout (see processing/prompt.py), and the digest of its
        image region that the items' identifiers include."""
        proc = self.info.get_hf_processor()
        ids = proc.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        norm = normalize_prompt(
            ids, counts.get("image", 0), counts.get("video", 0), proc.special,
            label_ids=lambda i: proc.tokenize(f"Image {i}"), allow_mixed=profiling,
        )
        sp = proc.special
        return norm, region_digest(norm.ids, (sp.image_placeholder, sp.video_placeholder))

    def check_expanded(self, norm: NormalizedPrompt, out: Mapping[str, Any]) -> None:
        """Pre-expanded image blocks must re-expand to exactly the ids that were sent."""
        if norm.expected is not None and out["prompt_token_ids"] != norm.expected:
            forget_sent_items(self.cache, [h for hashes in out.get("mm_hashes", {}).values() for h in hashes])
            at = first_difference(out["prompt_token_ids"], norm.expected)
            raise Molmo2InputError(
                "the prompt's expanded image blocks do not match the images sent with it (first difference at "
                f"token {at}: {len(norm.expected)} ids sent, {len(out['prompt_token_ids'])} expected). Send the "
                "'<|image|>' placeholder instead of expanded tokens, or expand with this checkpoint's processor."
            )

    def apply(self, prompt: Any, mm_data: Any, hf_processor_mm_kwargs: Mapping[str, object],
              tokenization_kwargs: Mapping[str, object] | None = None, **kwargs: Any) -> Any:
        counts = self._to_mm_items(mm_data).get_all_counts() if mm_data else {}
        norm, salt = self.normalize(prompt, counts, profiling=isinstance(mm_data, ProfilingData))
        token = _REGION_SALT.set(salt)
        try:
            out = super().apply(norm.ids, mm_data, hf_processor_mm_kwargs, tokenization_kwargs, **kwargs)
        finally:
            _REGION_SALT.reset(token)
        self.check_expanded(norm, out)
        return out

    def _hash_mm_items(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                       tokenization_kwargs: Mapping[str, object], **kwargs: Any) -> Any:
        base = super()._hash_mm_items(mm_items, hf_processor_mm_kwargs, tokenization_kwargs, **kwargs)
        if not self.bidirectional:
            return base  # causal image attention: an image's KV depends on the text before it only, as vLLM keys it
        return joint_identifiers(base, _REGION_SALT.get())

    @property
    def bidirectional(self) -> bool:
        return image_attention_is_bidirectional(self.info.get_hf_config())

    # -- the HF-side processor ----------------------------------------------------------------

    def _call_hf_processor(self, prompt: str, mm_data: Mapping[str, object], mm_kwargs: Mapping[str, object],
                           tok_kwargs: Mapping[str, object]) -> BatchFeature:
        proc = self.info.get_hf_processor()
        data: dict[str, Any] = {"input_ids": torch.tensor([insert_bos(proc.tokenize(prompt), proc.special.bos)])}
        images = mm_data.get("images") or []
        if images:
            batch = proc.process_images(images)
            data.update(batch.as_dict())
            data["image_num_pooled_patches"] = torch.tensor([im.token_pooling.shape[0] for im in batch.images])
        videos = mm_data.get("videos") or []
        if videos:
            processed = []
            for v in videos:
                frames, timestamps = frames_and_timestamps(v, cfg=proc.video_config)
                self.check_video_fits(len(frames))
                processed.append(preprocess_frames(frames, timestamps, proc.video_config))
            data["pixel_values_videos"] = torch.cat([v.pixel_values for v in processed])
            data["video_token_pooling"] = torch.cat([v.token_pooling for v in processed])
            data["video_grids"] = torch.tensor([v.grid for v in processed], dtype=torch.int64)
            data["video_num_frames"] = torch.tensor([v.grid[0] for v in processed])
            data["video_num_pooled_patches"] = torch.tensor([v.token_pooling.shape[0] for v in processed])
            width = max(len(v.timestamps) for v in processed)
            stamps = torch.full((len(processed), width), float("nan"), dtype=torch.float64)
            for i, v in enumerate(processed):
                stamps[i, : len(v.timestamps)] = torch.tensor(v.timestamps, dtype=torch.float64)
            data["video_timestamps"] = stamps
        return BatchFeature(data)

    def check_video_fits(self, num_frames: int) -> None:
        """Refuse a video that cannot fit max_model_len before resizing its frames (hundreds of
        frames take seconds of CPU that vLLM's own length check would waste)."""
        proc = self.info.get_hf_processor()
        per_frame = frame_block_length(proc.video_config, proc.special, proc.flags) + 1  # + timestamp
        limit = self.info.ctx.model_config.max_model_len
        if num_frames * per_frame > limit:
            raise Molmo2InputError(
                f"the video's {num_frames} frames expand to at least {num_frames * per_frame} tokens "
                f"({per_frame} per frame), more than max_model_len={limit}. Send fewer frames (vLLM's "
                "--media-io-kwargs '{\"video\": {\"num_frames\": N}}' for served videos) or raise max_model_len."
            )

    def _hf_processor_applies_updates(self, *args: Any, **kwargs: Any) -> bool:
        # Prompts are normalised in apply() and expanded by vLLM from the placeholders.
        return False

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        crops = hf_inputs.get("image_num_crops", torch.empty(0, dtype=torch.long))
        pooled = hf_inputs.get("image_num_pooled_patches", torch.empty(0, dtype=torch.long))
        frames = hf_inputs.get("video_num_frames", torch.empty(0, dtype=torch.long))
        vpooled = hf_inputs.get("video_num_pooled_patches", torch.empty(0, dtype=torch.long))
        return {
            "pixel_values": MultiModalFieldConfig.flat_from_sizes("image", crops),
            "image_token_pooling": MultiModalFieldConfig.flat_from_sizes("image", pooled),
            "image_grids": MultiModalFieldConfig.batched("image"),
            "image_num_crops": MultiModalFieldConfig.batched("image"),
            "image_num_pooled_patches": MultiModalFieldConfig.batched("image"),
            "pixel_values_videos": MultiModalFieldConfig.flat_from_sizes("video", frames),
            "video_token_pooling": MultiModalFieldConfig.flat_from_sizes("video", vpooled),
            "video_grids": MultiModalFieldConfig.batched("video"),
            "video_num_frames": MultiModalFieldConfig.batched("video"),
            "video_num_pooled_patches": MultiModalFieldConfig.batched("video"),
            "video_timestamps": MultiModalFieldConfig.batched("video"),
        }

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: Any) -> Sequence[Any]:
        proc = self.info.get_hf_processor()
        sp = proc.special
        patch = sp.patch

        def only_patches(tokenizer: Any, full: Any) -> torch.Tensor:
            return torch.tensor(full) == patch

        def image_tokens(i: int) -> PromptUpdateDetails:
            grid = out_mm_kwargs["image"][i]["image_grids"].data.tolist()
            return PromptUpdateDetails(full=proc.image_tokens(grid), is_embed=only_patches)

        def video_tokens(i: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["video"][i]
            _, rows, cols = item["video_grids"].data.tolist()
            stamps = [t for t in item["video_timestamps"].data.tolist() if t == t]
            ids = video_tokens_for(stamps, proc.tokenizer, sp, proc.flags, (rows, cols))
            return PromptUpdateDetails(full=ids, is_embed=only_patches)

        updates = []
        if "image" in mm_items:
            updates.append(PromptReplacement(modality="image", target=[sp.image_placeholder], replacement=image_tokens))
        if "video" in mm_items:
            updates.append(PromptReplacement(modality="video", target=[sp.video_placeholder], replacement=video_tokens))
        return updates


def forget_sent_items(cache: Any, keys: Sequence[str]) -> None:
    """Undo what vLLM's processor cache recorded for a request that is refused after processing.

    With IPC caching (the default), the front end's cache remembers which items it has sent to
    the engine and sends only their keys next time. A request refused after processing never
    reaches the engine, so its items must be forgotten here, or the next request with the same
    image would send a key the engine does not have and kill it ("Expected a cached item").
    Forgetting an item the engine does have only costs sending it again. (The shared-memory
    cache variant keeps the data itself where the engine reads it and has no such record.)
    """
    record = getattr(cache, "_cache", None)
    if record is None:
        return
    for key in keys:
        record.pop(key, None)


def region_bounds(vllm_config: Any) -> RegionBounds | None:
    """The longest multimodal regions the engine's per-prompt limits allow, in the chat
    template's layout (images first, 'Image k' labels for several), capped by max_model_len."""
    mc = vllm_config.model_config
    mm = getattr(mc, "multimodal_config", None)
    if mm is None:
        return None
    proc = Molmo2Processor.from_pretrained(checkpoint_dir(mc.model, getattr(mc, "revision", None)), config=mc.hf_config)
    max_len = int(mc.max_model_len)
    images = int(mm.get_limit_per_prompt("image"))
    per_image = size_with_most_tokens(proc.image_config, lambda g: num_image_tokens(g, proc.flags))[2]
    images = min(images, max_len // per_image + 1)  # vLLM's default is 999; max_model_len bounds it anyway
    labels = sum(len(proc.tokenize(f"Image {i + 1}")) for i in range(images)) if images > 1 else 0
    video = 0
    if int(mm.get_limit_per_prompt("video")) > 0:
        cfg = proc.video_config
        stamp = len(proc.tokenize(frame_prefix(1, cfg.num_frames / cfg.max_fps)))
        video = 1 + cfg.num_frames * (frame_block_length(cfg, proc.special, proc.flags) + stamp)
    return RegionBounds(
        one_image=1 + per_image if images else 0,
        all_images=1 + labels + images * per_image if images else 0,
        images_explicit="image" in (getattr(mm, "limit_per_prompt", None) or {}),
        video=video,
    )
