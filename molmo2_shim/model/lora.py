"""LoRA adapters in PEFT format, trained on the original model or on transformers' native Molmo2.

vLLM applies an adapter to the module it names after the model's `hf_to_vllm_mapper`. The
shim's decoder fuses q/k/v into `qkv_proj` and up/gate into `up_gate_proj` exactly as the
original does (`att_proj` rows [q; k; v], `ff_proj` rows [up; gate]), so:

* an adapter trained on the original (PEFT targets `att_proj`, `attn_out`, `ff_proj`,
  `ff_out`) loads by renaming only: a LoRA on a fused matrix is a LoRA on the fused layer;
* an adapter trained on transformers' native Molmo2 targets `q_proj`, `k_proj`, `v_proj` (and
  `gate_proj`, `up_proj`) separately; its deltas are merged into one LoRA on the fused layer,
  exactly: A = [A_q; A_k; A_v] and B = block-diag(B_q, B_k, B_v), so B·A stacks each slice's
  B_i·A_i (missing slices are zero blocks). PEFT's scaling (alpha / r) comes from its config,
  not from the tensors, so it is unchanged; the merged rank is up to 3r (2r for the MLP), which
  `max_lora_rank` must allow;
* vLLM applies LoRA to the language model only (0.11-0.13), and from 0.14 to the vision tower
  only for models that map encoder tokens to image tokens, which Molmo2's crops and pooling do
  not allow. An adapter with vision-tower or connector targets would run with those deltas
  silently dropped, so it is refused (MOLMO2_SHIM_ALLOW_INEXACT=1 drops them instead).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from vllm.model_executor.models.utils import WeightsMapper

from ..engine.exactness import allow_inexact
from ..errors import Molmo2ConfigError

logger = logging.getLogger("molmo2_shim")

# Adapter module names (after PEFT's "base_model.model." prefix) -> the shim's module names.
RENAMED_MODULES = {".self_attn.att_proj.": ".self_attn.qkv_proj.", ".self_attn.attn_out.": ".self_attn.o_proj.",
                   ".mlp.ff_proj.": ".mlp.up_gate_proj.", ".mlp.ff_out.": ".mlp.down_proj.",
                   ".self_attn.q_proj.": ".self_attn.qkv_proj.", ".self_attn.k_proj.": ".self_attn.qkv_proj.",
                   ".self_attn.v_proj.": ".self_attn.qkv_proj.", ".mlp.up_proj.": ".mlp.up_gate_proj.",
                   ".mlp.gate_proj.": ".mlp.up_gate_proj."}
RENAMED_PREFIXES = {"model.transformer.blocks.": "model.layers.", "model.language_model.layers.": "model.layers."}
VISION_PARTS = ("vision_backbone", "vision_tower", "multi_modal_projector", "image_vit", "image_pooling_2d",
                "image_projector")
# Native slices fused into one shim layer, in the fused rows' order.
SPLIT_SLICES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "up_gate_proj": ("up_proj", "gate_proj")}
_SLICE = re.compile(r"^(?P<head>.*\.)(?P<slice>q_proj|k_proj|v_proj|up_proj|gate_proj)\.(?P<ab>lora_[AB])\.weight$")


@dataclass
class AdapterNames(WeightsMapper):
    """The model's `hf_to_vllm_mapper`: vLLM's renaming rules, plus the fused layers' slice sizes
    that merging a native adapter needs (vLLM hands adapter tensors and this mapper, not the
    model, to LoRAModel.from_lora_tensors)."""

    fused_out_sizes: dict[str, list[int]] = field(default_factory=dict)
    max_lora_rank: int | None = None  # the engine's; a merged native adapter must fit it


def adapter_names(text_config: object, max_lora_rank: int | None = None) -> AdapterNames:
    heads, kv, dim = text_config.num_attention_heads, text_config.num_key_value_heads, text_config.head_dim
    return AdapterNames(
        orig_to_new_substr=dict(RENAMED_MODULES), orig_to_new_prefix=dict(RENAMED_PREFIXES),
        fused_out_sizes={"qkv_proj": [heads * dim, kv * dim, kv * dim],
                         "up_gate_proj": [text_config.intermediate_size] * 2},
        max_lora_rank=max_lora_rank,
    )


def _fused_name(head: str, sliced: str) -> str:
    return head + next(fused for fused, parts in SPLIT_SLICES.items() if sliced in parts)


def prepare_adapter(tensors: Mapping[str, torch.Tensor], out_sizes: Mapping[str, list[int]],
                    max_lora_rank: int | None = None) -> dict[str, torch.Tensor]:
    """The adapter's tensors as LoRAs on the shim's modules: vision targets refused, native
    split slices merged into the fused layers.

    `out_sizes[fused]` gives each slice's output rows (q, k, v sizes; up, gate sizes), for
    the zero blocks of slices the adapter does not train.
    """
    vision = sorted(n for n in tensors if any(part in n for part in VISION_PARTS))
    if vision:
        if not allow_inexact():
            raise Molmo2ConfigError(
                f"this LoRA adapter trains vision modules ({vision[0]}, ... {len(vision)} tensors); vLLM applies LoRA to "
                "Molmo2's language model only, so the served model would differ from the adapter's. Train the adapter "
                "on the text decoder only (PEFT exclude_modules for the vision backbone), or set "
                "MOLMO2_SHIM_ALLOW_INEXACT=1 to serve it without its vision deltas."
            )
        logger.warning("molmo2-shim: MOLMO2_SHIM_ALLOW_INEXACT=1: serving a LoRA adapter WITHOUT its %d vision-module "
                       "tensors (%s, ...): its outputs differ from the adapter's model", len(vision), vision[0])
        tensors = {n: t for n, t in tensors.items() if n not in vision}
    groups: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        m = _SLICE.match(name)
        if m is None:
            out[name] = tensor
            continue
        fused = _fused_name(m["head"], m["slice"])
        groups.setdefault(fused, {}).setdefault(m["slice"], {})[m["ab"]] = tensor
    for fused, slices in groups.items():
        kind = fused.rsplit(".", 1)[-1]
        parts = SPLIT_SLICES[kind]
        rank = max(s["lora_A"].shape[0] for s in slices.values())
        width = next(iter(slices.values()))["lora_A"].shape[1]
        dtype = next(iter(slices.values()))["lora_A"].dtype
        a_blocks, b_blocks = [], []
        for part, rows in zip(parts, out_sizes[kind]):
            given = slices.get(part)
            a_blocks.append(given["lora_A"] if given else torch.zeros(rank, width, dtype=dtype))
            b_blocks.append(given["lora_B"] if given else torch.zeros(rows, rank, dtype=dtype))
        merged_a = torch.cat(a_blocks)
        if max_lora_rank is not None and merged_a.shape[0] > max_lora_rank:
            # vLLM would fail copying it into its rank-sized buffers, taking the engine down.
            raise Molmo2ConfigError(
                f"this LoRA adapter trains {', '.join(sorted(slices))} of {fused} separately (rank {rank} each); "
                f"Molmo2 fuses them into one layer, where the exact merge is one LoRA of rank {merged_a.shape[0]}, "
                f"above this engine's max_lora_rank={max_lora_rank}. Start the engine with max_lora_rank >= "
                f"{len(parts) * rank} (verl: set the rollout's max_lora_rank or LoRA rank accordingly).")
        out[f"{fused}.lora_A.weight"] = merged_a
        out[f"{fused}.lora_B.weight"] = torch.block_diag(*b_blocks)
    return out
