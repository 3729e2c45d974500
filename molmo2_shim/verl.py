"""The trainer side of an RL step: the actor's inputs built from the same source as the rollout.

In verl / verl-agent, vLLM (with molmo2-shim) generates the rollout and reports its log-probs;
the actor (the original model under FSDP) recomputes them on the trainer. Any difference in
token ids, image layout, pixels or attention mask between the two is a silent rollout/actor
mismatch. These helpers give the actor exactly what vLLM used, through the same prompt
normalisation and processing code the shim's vLLM processor runs. No vLLM import: they run
in the trainer's processes.

* `actor_inputs(...)`: one example's forward inputs for the original model: the prompt ids vLLM
  used (any of the three prompt shapes: `<|image|>` placeholders, none as verl-agent sends, ids
  already expanded), then the response; `token_type_ids` marking image/video tokens over prompt
  and response (the original attends bidirectionally among them only when it gets them); pixels,
  pooling indices, grids and crop counts as the original processor makes them.
* `collate(examples, pad_token_id, padding_side)`: a padded micro-batch `model(**batch)` takes,
  for the original remote code (per-image pooling indices, which it offsets itself) or, with
  `native=True`, for transformers >= 5.20's Molmo2 (indices offset across the batch,
  `mm_token_type_ids`). Neither model takes images and videos in one forward pass, and the
  original also fails on text-only examples next to image examples: such micro-batches are
  refused (`split_by_modality` groups examples).
* `verl_row(...)`: what verl-agent's TrajectoryCollector stores per sample (left-padded ids,
  positions, `multi_modal_inputs` with token_type_ids over prompt + response, `raw_prompt_ids`,
  `multi_modal_data`), so verl's dp_actor, which concatenates `multi_modal_inputs` per key and
  passes them to the model, gives the original its mask.
* `exact_actor_attention(model)`: FlashAttention-2 drops the original's token_type_ids mask;
  refuse it, or switch the loaded model to SDPA, which honours it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import Molmo2ConfigError, Molmo2InputError
from .processing.layout import mm_token_mask
from .processing.processor import Molmo2Processor
from .processing.prompt import first_difference, normalize_prompt
from .processing.video import frames_and_timestamps, preprocess_frames, video_tokens_for

IMAGE_KEYS = ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops")
VIDEO_KEYS = ("pixel_values_videos", "video_token_pooling", "video_grids")
# Key names for the original remote code / transformers-native Molmo2.
MASK_KEY = {False: "token_type_ids", True: "mm_token_type_ids"}


@functools.lru_cache(maxsize=8)
def _load_processor(model_dir: str) -> Molmo2Processor:
    return Molmo2Processor.from_pretrained(model_dir)


def processor_of(model_dir_or_processor: str | os.PathLike | Any) -> Molmo2Processor:
    """The shim's processor for a checkpoint folder, the shim's processor itself, or the hub's
    remote-code processor (verl loads that one with trust_remote_code; its folder is reused)."""
    if isinstance(model_dir_or_processor, Molmo2Processor):
        return model_dir_or_processor
    tokenizer = getattr(model_dir_or_processor, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "name_or_path", None):
        return Molmo2Processor.from_pretrained(tokenizer.name_or_path, tokenizer=tokenizer)
    return _load_processor(str(Path(model_dir_or_processor)))


def prompt_ids(proc: Molmo2Processor, prompt_token_ids: Sequence[int], images: Sequence[Any] = (),
               videos: Sequence[Any] = ()) -> tuple[list[int], dict[str, torch.Tensor]]:
    """The prompt ids vLLM (with the shim) computes for a request, and the multimodal tensors.

    The same steps as the shim's vLLM processor: normalise the prompt shape (BOS, placeholders
    where the chat template puts them when there are none, expanded blocks collapsed and checked),
    then expand each placeholder with its item's block.
    """
    sp = proc.special
    norm = normalize_prompt(list(prompt_token_ids), len(images), len(videos), sp,
                            label_ids=lambda i: proc.tokenize(f"Image {i}"))
    ids, tensors = norm.ids, {}
    if images:
        batch = proc.process_images(list(images))
        tensors.update(batch.as_dict())
        ids = proc.expand_placeholders(ids, sp.image_placeholder, [proc.image_tokens(im.grid) for im in batch.images])
    if videos:
        if len(videos) > 1:
            raise Molmo2InputError("Molmo2 takes at most one video per prompt")
        frames, stamps = frames_and_timestamps(videos[0], cfg=proc.video_config)
        video = preprocess_frames(frames, stamps, proc.video_config)
        tensors.update(video.as_dict())
        _, rows, cols = video.grid
        block = video_tokens_for(video.timestamps, proc.tokenizer, sp, proc.flags, (rows, cols))
        ids = proc.expand_placeholders(ids, sp.video_placeholder, [block])
    if norm.expected is not None and ids != norm.expected:
        raise Molmo2InputError(
            f"the prompt's expanded image blocks do not match the images sent with it (first difference at token "
            f"{first_difference(ids, norm.expected)}); vLLM refuses this request too"
        )
    return ids, tensors


def actor_inputs(model_dir_or_processor: str | os.PathLike | Molmo2Processor, prompt_token_ids: Sequence[int],
                 images: Sequence[Any] | None = None, response_token_ids: Sequence[int] | None = None,
                 videos: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
    """One example's forward inputs for the original model (batch dimension 1).

    `prompt_token_ids`, `images` and `videos` are what the rollout sent vLLM (videos as
    `(frames, metadata)` pairs, as vLLM takes them); `response_token_ids` what it generated.
    """
    proc = processor_of(model_dir_or_processor)
    ids, tensors = prompt_ids(proc, prompt_token_ids, images or (), videos or ())
    full = ids + [int(t) for t in response_token_ids or ()]
    return {
        "input_ids": torch.tensor([full], dtype=torch.long),
        "attention_mask": torch.ones(1, len(full), dtype=torch.long),
        "token_type_ids": torch.tensor([mm_token_mask(full, proc.special)], dtype=torch.long),
        **tensors,
    }


def split_by_modality(examples: Sequence[dict[str, torch.Tensor]], native: bool = False) -> list[list[int]]:
    """Indices of `examples` in groups the model scores in one forward pass each.

    Neither model takes images and videos together. The original remote code also cannot take a
    text-only example next to image examples (its build_batched_images asserts on an example
    without images); transformers-native Molmo2 can.
    """
    videos = [i for i, e in enumerate(examples) if "pixel_values_videos" in e]
    images = [i for i, e in enumerate(examples) if "pixel_values" in e]
    text = [i for i in range(len(examples)) if i not in videos and i not in images]
    groups = [text + images] if native else [text, images]
    return [sorted(g) for g in (*groups, videos) if g]


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens, as verl computes them (left padding starts at 0)."""
    return torch.clip(torch.cumsum(attention_mask, dim=-1) - 1, min=0)


def collate(examples: Sequence[dict[str, torch.Tensor]], pad_token_id: int, padding_side: str = "right",
            native: bool = False) -> dict[str, torch.Tensor]:
    """A padded micro-batch of `actor_inputs` outputs that the model takes as `model(**batch)`.

    `native=False`: the original remote code, which offsets each image's pooling indices itself
    (plain concatenation, as verl's dp_actor does). `native=True`: transformers >= 5.20's
    Molmo2, which expects indices into the whole batch's crops and `mm_token_type_ids`.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    groups = split_by_modality(examples, native)
    if len(groups) > 1:
        kinds = "image and video" if any("pixel_values_videos" in e for e in examples) and any(
            "pixel_values" in e for e in examples) else "text-only and image"
        raise Molmo2InputError(
            f"this micro-batch mixes {kinds} examples, which the "
            + ("transformers-native" if native else "original") + " Molmo2 model cannot score in one forward pass "
            "(it refuses pixel_values with pixel_values_videos; the original's build_batched_images also asserts on "
            "an example without images next to image examples). Group them with molmo2_shim.verl.split_by_modality."
        )
    width = max(int(e["input_ids"].shape[1]) for e in examples)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        fill = torch.full((1, width - t.shape[1]), value, dtype=t.dtype)
        return torch.cat([fill, t] if padding_side == "left" else [t, fill], dim=1)

    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([pad(e["input_ids"], pad_token_id) for e in examples]),
        "attention_mask": torch.cat([pad(e["attention_mask"], 0) for e in examples]),
        MASK_KEY[native]: torch.cat([pad(e["token_type_ids"], 0) for e in examples]),
    }
    batch["position_ids"] = position_ids(batch["attention_mask"])
    for keys, pooling_key, per_item in ((IMAGE_KEYS, "image_token_pooling", "image_num_crops"),
                                        (VIDEO_KEYS, "video_token_pooling", None)):
        parts = [e for e in examples if keys[0] in e]
        if not parts:
            continue
        for key in keys:
            batch[key] = torch.cat([e[key] for e in parts])
        if native:
            batch[pooling_key] = _offset_across_batch(parts, keys[0], pooling_key, per_item)
    return batch


def _offset_across_batch(parts: Sequence[dict[str, torch.Tensor]], pixels: str, pooling: str,
                         per_item: str | None) -> torch.Tensor:
    """Pooling indices into the batch's concatenated crops/frames (transformers-native layout).

    The shim's processor makes each image's (and each video's) indices local to that item, as
    the original processor does; native Molmo2 wants them offset by every earlier item's patches.
    """
    out, offset = [], 0
    for e in parts:
        patches = int(e[pixels].shape[1])
        if per_item is None:  # one video per example: its frames' indices are already video-global
            sizes, pool_rows = [int(e[pixels].shape[0])], [int(e[pooling].shape[0])]
        else:
            grids = e["image_grids"]
            sizes = [int(c) for c in e[per_item]]
            pool_rows = [int(g[0] * g[1] + g[2] * g[3]) for g in grids]
        for item in torch.split(e[pooling], pool_rows):
            out.append(torch.where(item >= 0, item + offset, item))
            offset += sizes.pop(0) * patches
    return torch.cat(out)


def verl_row(model_dir_or_processor: str | os.PathLike | Molmo2Processor, prompt_token_ids: Sequence[int],
             max_prompt_length: int, response_length: int, pad_token_id: int,
             images: Sequence[Any] | None = None) -> dict[str, Any]:
    """One sample as verl-agent's TrajectoryCollector.preprocess_single_sample stores it.

    `input_ids`/`attention_mask`/`position_ids` are the prompt left-padded to max_prompt_length
    (verl appends the response later); `multi_modal_inputs` holds the image tensors and
    `token_type_ids` over the padded prompt and the (yet unknown, type 0) response, so that
    dp_actor's per-key concatenation hands the original model its mask; `raw_prompt_ids` go to
    vLLM unchanged (the shim normalises them there the same way).
    """
    proc = processor_of(model_dir_or_processor)
    example = actor_inputs(proc, prompt_token_ids, images)
    length = int(example["input_ids"].shape[1])
    if length > max_prompt_length:
        raise Molmo2InputError(f"the prompt has {length} tokens after image expansion, more than "
                               f"max_prompt_length={max_prompt_length}")
    pad = max_prompt_length - length
    ids = torch.cat([torch.full((pad,), pad_token_id, dtype=torch.long), example["input_ids"][0]])
    mask = torch.cat([torch.zeros(pad, dtype=torch.long), example["attention_mask"][0]])
    token_types = torch.cat([torch.zeros(pad, dtype=torch.long), example["token_type_ids"][0],
                             torch.zeros(response_length, dtype=torch.long)])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": position_ids(mask),
        "raw_prompt_ids": list(prompt_token_ids),
        "multi_modal_data": {"image": list(images)} if images else None,
        "multi_modal_inputs": {**{k: example[k] for k in IMAGE_KEYS if k in example}, "token_type_ids": token_types[None]},
    }


def exact_actor_attention(model: Any, switch: bool = False) -> str:
    """Make sure the actor attends like the rollout: the original's bidirectional image mask comes
    from token_type_ids, which FlashAttention-2 ignores (it takes only a padding mask).

    Returns the text model's attention implementation. FlashAttention-2 is refused with the
    verl setting that selects SDPA, or with `switch=True` replaced by SDPA on the loaded model;
    MOLMO2_SHIM_ALLOW_INEXACT=1 keeps it (the actor then attends causally among image tokens).
    """
    config = getattr(model, "config", model)
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl != "flash_attention_2":
        return impl
    if os.environ.get("MOLMO2_SHIM_ALLOW_INEXACT", "").strip().lower() in ("1", "true", "yes", "on"):
        return impl
    if not switch:
        raise Molmo2ConfigError(
            "the actor runs FlashAttention-2, which drops Molmo2's token_type_ids mask: its image tokens would attend "
            "causally while the rollout (vLLM with molmo2-shim) attends bidirectionally as the original does. Load "
            "the actor with attn_implementation='sdpa': in verl >= 0.6.1 "
            "+actor_rollout_ref.model.override_config.attn_implementation=sdpa, in verl-agent "
            "+actor_rollout_ref.model.override_config._attn_implementation=sdpa; or call "
            "exact_actor_attention(model, switch=True); MOLMO2_SHIM_ALLOW_INEXACT=1 accepts the deviation."
        )
    config._attn_implementation = "sdpa"  # transformers propagates it to the text, ViT and adapter sub-configs
    return "sdpa"
