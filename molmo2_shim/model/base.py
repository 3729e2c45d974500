"""Molmo2ForConditionalGeneration: the model math, shared by every vLLM version's adapter.

The per-version folders under patches/ subclass `Molmo2Base` only to expose it under the
method names and class attributes that version's model runner expects (the patch catalog,
molmo2_shim.patches.catalog, lists them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.sequence import IntermediateTensors

from ..engine.exactness import refuse_unsupported_config
from ..processing.config import image_attention_is_bidirectional, text_config_of
from ..processing.layout import CONFIG_ID_FIELDS, MM_TOKEN_KEYS
from .bidirectional import OP_NAME, BidirectionalPrefill
from .lora import adapter_names
from .text import TextModel
from .vision import VisionBackbone
from .weights import WeightMapper, load_weights


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def mm_token_ids_from_config(config: Any) -> list[int]:
    ids = [getattr(config, CONFIG_ID_FIELDS[k], None) for k in MM_TOKEN_KEYS]
    return [int(i) for i in ids if i is not None]


class Molmo2Base(nn.Module):
    # For vLLM's LoRA / quantisation plumbing: which checkpoint projections are fused here.
    packed_modules_mapping = {
        "qkv_proj": ["qkv_proj"],
        "up_gate_proj": ["up_gate_proj"],
        "qkv": ["wq", "wk", "wv"],
        "wkv": ["wk", "wv"],
        "w13": ["w1", "w3"],
    }

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        text_cfg = text_config_of(config)
        quant_config = vllm_config.quant_config
        self.config = config
        self.text_config = text_cfg
        refuse_unsupported_config(config)  # also checked at engine start; this covers engines built otherwise
        self.patch_token_id = int(config.image_patch_id)
        # MolmoWeb attends causally (is_mm_prefix_lm: false): nothing to recompute then.
        self.bidir = BidirectionalPrefill(mm_token_ids_from_config(config), enabled=image_attention_is_bidirectional(config),
                                          profile_tokens=int(vllm_config.scheduler_config.max_num_batched_tokens))
        self.vision_backbone = VisionBackbone(
            config.vit_config, config.adapter_config, quant_config, _prefixed(prefix, "vision_backbone")
        )
        self.model = TextModel(vllm_config=vllm_config, prefix=_prefixed(prefix, "model"))
        _split_graphs_at(vllm_config, OP_NAME)
        emb = self.model.embed_tokens
        emb.weight._molmo2_vocab_shard = (emb.shard_indices.org_vocab_start_index, emb.shard_indices.org_vocab_end_index)
        self.lm_head = ParallelLMHead(
            text_cfg.vocab_size, text_cfg.hidden_size, quant_config=quant_config, prefix=_prefixed(prefix, "lm_head")
        )
        self.logits_processor = LogitsProcessor(text_cfg.vocab_size)
        # The head covers the base vocabulary only; image special tokens live past it. vLLM
        # sizes its sampler buffers by the model config's vocabulary, which the shim reports
        # as base + additional, so those ids get a logit (-inf) instead of an index error.
        self.logits_width = max(int(vllm_config.model_config.get_vocab_size()), int(text_cfg.vocab_size))
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors
        self._mapper = WeightMapper(int(text_cfg.vocab_size))
        # vLLM reads the adapter-name mapper from the model (an instance attribute: it carries
        # this checkpoint's fused slice sizes).
        lora_config = getattr(vllm_config, "lora_config", None)
        self.hf_to_vllm_mapper = adapter_names(text_cfg, getattr(lora_config, "max_lora_rank", None))

    # LoRA (the per-version classes add vLLM's SupportsLoRA): no embedding or head adapters.
    embedding_modules: dict[str, str] = {}
    embedding_padding_modules: list[str] = []

    def get_mm_mapping(self) -> Any:
        """The language model takes LoRA; the vision tower and connector do not (see model/lora.py)."""
        from vllm.model_executor.models.module_mapping import MultiModelKeys

        return MultiModelKeys.from_string_field(
            language_model="model",
            connector=["vision_backbone.image_pooling_2d", "vision_backbone.image_projector"],
            tower_model="vision_backbone.image_vit",
        )

    # -- what verl and vLLM touch -----------------------------------------------------------

    @property
    def language_model(self) -> TextModel:
        return self.model

    def get_language_model(self) -> TextModel:
        return self.model

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<|image|>"
        if modality.startswith("video"):
            return "<|video|>"
        raise ValueError(f"Molmo2 takes images and videos, not {modality!r}")

    # -- multimodal features -----------------------------------------------------------------

    def _features(self, pixels: Any, pooling: Any, crops_per_item: Any, rows_per_item: Any) -> list[torch.Tensor]:
        """Run the vision path for a group of items; one feature tensor per item.

        Pooling indices arrive local to each item (as the original processor makes them), so
        each item's rows are shifted by the patches of the items before it.
        """
        pixels = _cat(pixels)
        pooling = _cat(pooling).to(pixels.device, torch.long)
        crops = _as_long_list(crops_per_item)
        rows = _as_long_list(rows_per_item)
        patches_per_crop = pixels.shape[1]
        offsets = torch.repeat_interleave(
            torch.tensor([0, *crops[:-1]], device=pooling.device).cumsum(0) * patches_per_crop,
            torch.tensor(rows, device=pooling.device),
        )
        pooling = torch.where(pooling >= 0, pooling + offsets[:, None], pooling)
        feats = self.vision_backbone(pixels, pooling)
        return list(feats.split(rows))

    def multimodal_features(self, **kwargs: Any) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        if kwargs.get("pixel_values") is not None:
            out += self._features(
                kwargs["pixel_values"], kwargs["image_token_pooling"],
                kwargs["image_num_crops"], kwargs["image_num_pooled_patches"],
            )
        if kwargs.get("pixel_values_videos") is not None:
            out += self._features(
                kwargs["pixel_values_videos"], kwargs["video_token_pooling"],
                kwargs["video_num_frames"], kwargs["video_num_pooled_patches"],
            )
        return out

    def embed_with_features(
        self, input_ids: torch.Tensor, features: Sequence[torch.Tensor] | None, is_patch: torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings with image features ADDED at <im_patch> positions, as the original.

        (vLLM's generic merge replaces the embedding instead, which drops wte[<im_patch>].)
        """
        embeds = self.model.embed_input_ids(input_ids)
        has_features = features is not None and len(features) > 0
        self.bidir.note_input_ids(input_ids, has_features)
        if not has_features:
            return embeds
        if is_patch is None:
            is_patch = input_ids == self.patch_token_id
        is_patch = is_patch.to(embeds.device, non_blocking=True)  # vLLM 0.22 passes a CPU mask
        flat = torch.cat(list(features)).to(embeds.dtype)
        delta = torch.zeros_like(embeds).masked_scatter_(is_patch.unsqueeze(-1), flat)
        return embeds + delta

    # -- forward -----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor | IntermediateTensors:
        self.bidir.begin_step(positions)
        try:
            return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
        finally:
            self.bidir.end_step()

    def compute_logits(self, hidden_states: torch.Tensor, *_: Any) -> torch.Tensor | None:
        logits = self.logits_processor(self.lm_head, hidden_states)
        if logits is None or logits.shape[-1] >= self.logits_width:
            return logits
        pad = logits.new_full((*logits.shape[:-1], self.logits_width - logits.shape[-1]), float("-inf"))
        return torch.cat([logits, pad], dim=-1)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_weights(self, weights, self._mapper)


def _split_graphs_at(vllm_config: Any, op_name: str) -> None:
    """Have vLLM's compiler cut its piecewise graphs at the bidirectional-prefill op, as it does
    at attention, so the op runs eagerly (it reads the step's plan in Python).

    The op is named both ways: vLLM 0.11.0 compares `str(node.target)` ("ns.op.default"), later
    versions the op's qualified name ("ns::op").
    """
    cc = getattr(vllm_config, "compilation_config", None)
    ops = getattr(cc, "splitting_ops", None)
    if not isinstance(ops, list):
        return
    namespace, _, name = op_name.partition("::")
    for spelling in (op_name, f"{namespace}.{name}.default"):
        if spelling not in ops:
            ops.append(spelling)


def _cat(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.cat([t for t in x])


def _as_long_list(x: Any) -> list[int]:
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.reshape(-1).tolist()]
    return [int(v) for v in (t.reshape(-1).tolist()[0] if isinstance(t, torch.Tensor) else t for t in x)]
