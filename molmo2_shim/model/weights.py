"""Checkpoint names -> this model's parameters, for disk loading and for verl's weight sync.

Contract (verl calls `model.load_weights` every rollout step with the trainer's state dict):
original hub names and transformers-native names are both accepted; the iterable is consumed
once, item by item; every tensor is copied into the existing parameter (never rebinding it,
so CUDA graphs and vLLM's sleep mode keep their addresses); any subset works, in any number
of calls (the two embedding tables are written into their own row ranges, never buffered);
unknown names are skipped; the names of the parameters written are returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Target:
    param: str
    shard: str | int | None = None  # shard id for vLLM's merged/QKV weight loaders
    row_offset: int | None = None  # for the split embedding tables: first row to write


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Target]]


def _rules(base_vocab: int) -> list[Rule]:
    def r(pattern: str, make: Callable[[re.Match[str]], Target]) -> Rule:
        return re.compile(pattern), make

    text = r"(?:model\.transformer\.blocks|model\.language_model\.layers)\.(\d+)\."
    vit = r"(?:model\.vision_backbone\.image_vit\.transformer\.resblocks|model\.vision_tower\.layers)\.(\d+)\."
    pool = r"(?:model\.vision_backbone\.image_pooling_2d|model\.multi_modal_projector\.image_pooling_2d)\."
    proj = r"(?:model\.vision_backbone\.image_projector|model\.multi_modal_projector\.image_projector)\."
    layer = lambda m, rest, **kw: Target(f"model.layers.{m.group(1)}.{rest}", **kw)  # noqa: E731
    block = lambda m, rest, **kw: Target(f"vision_backbone.image_vit.blocks.{m.group(1)}.{rest}", **kw)  # noqa: E731
    return [
        r(r"^lm_head\.weight$", lambda m: Target("lm_head.weight")),
        # Embedding: the original splits base and additional vocabulary; HF-native concatenates.
        r(r"^model\.transformer\.wte\.embedding$", lambda m: Target("model.embed_tokens.weight", row_offset=0)),
        r(r"^model\.transformer\.wte\.new_embedding$",
          lambda m: Target("model.embed_tokens.weight", row_offset=base_vocab)),
        r(r"^model\.language_model\.embed_tokens\.weight$", lambda m: Target("model.embed_tokens.weight", row_offset=0)),
        r(r"^(?:model\.transformer\.ln_f|model\.language_model\.norm)\.weight$", lambda m: Target("model.norm.weight")),
        r(text + r"(?:attn_norm|input_layernorm)\.weight$", lambda m: layer(m, "input_layernorm.weight")),
        r(text + r"(?:ff_norm|post_attention_layernorm)\.weight$", lambda m: layer(m, "post_attention_layernorm.weight")),
        r(text + r"self_attn\.att_proj\.(weight|bias)$", lambda m: layer(m, f"self_attn.qkv_proj.{m.group(2)}")),
        r(text + r"self_attn\.([qkv])_proj\.(weight|bias)$",
          lambda m: layer(m, f"self_attn.qkv_proj.{m.group(3)}", shard=m.group(2))),
        r(text + r"self_attn\.(?:attn_out|o_proj)\.weight$", lambda m: layer(m, "self_attn.o_proj.weight")),
        r(text + r"self_attn\.([qk])_norm\.weight$", lambda m: layer(m, f"self_attn.{m.group(2)}_norm.weight")),
        r(text + r"mlp\.ff_proj\.weight$", lambda m: layer(m, "mlp.up_gate_proj.weight")),
        r(text + r"mlp\.up_proj\.weight$", lambda m: layer(m, "mlp.up_gate_proj.weight", shard=0)),
        r(text + r"mlp\.gate_proj\.weight$", lambda m: layer(m, "mlp.up_gate_proj.weight", shard=1)),
        r(text + r"mlp\.(?:ff_out|down_proj)\.weight$", lambda m: layer(m, "mlp.down_proj.weight")),
        # Vision transformer.
        r(r"^(?:model\.vision_backbone\.image_vit|model\.vision_tower)\.patch_embedding\.(weight|bias)$",
          lambda m: Target(f"vision_backbone.image_vit.patch_embedding.{m.group(1)}")),
        r(r"^(?:model\.vision_backbone\.image_vit|model\.vision_tower)\.positional_embedding$",
          lambda m: Target("vision_backbone.image_vit.positional_embedding")),
        r(vit + r"(?:attention\.w|self_attn\.)([qkv])(?:_proj)?\.(weight|bias)$",
          lambda m: block(m, f"attention.qkv.{m.group(3)}", shard=m.group(2))),
        r(vit + r"(?:attention\.wo|self_attn\.o_proj)\.(weight|bias)$", lambda m: block(m, f"attention.wo.{m.group(2)}")),
        r(vit + r"(?:feed_forward\.w1|mlp\.fc1)\.(weight|bias)$", lambda m: block(m, f"feed_forward.w1.{m.group(2)}")),
        r(vit + r"(?:feed_forward\.w2|mlp\.fc2)\.(weight|bias)$", lambda m: block(m, f"feed_forward.w2.{m.group(2)}")),
        r(vit + r"(?:attention_norm|layer_norm1)\.(weight|bias)$", lambda m: block(m, f"attention_norm.{m.group(2)}")),
        r(vit + r"(?:ffn_norm|layer_norm2)\.(weight|bias)$", lambda m: block(m, f"ffn_norm.{m.group(2)}")),
        # Pooling attention: k and v share one merged layer.
        r(pool + r"(?:wq|q_proj)\.(weight|bias)$", lambda m: Target(f"vision_backbone.image_pooling_2d.wq.{m.group(1)}")),
        r(pool + r"(?:wk|k_proj)\.(weight|bias)$",
          lambda m: Target(f"vision_backbone.image_pooling_2d.wkv.{m.group(1)}", shard=0)),
        r(pool + r"(?:wv|v_proj)\.(weight|bias)$",
          lambda m: Target(f"vision_backbone.image_pooling_2d.wkv.{m.group(1)}", shard=1)),
        r(pool + r"(?:wo|o_proj)\.(weight|bias)$", lambda m: Target(f"vision_backbone.image_pooling_2d.wo.{m.group(1)}")),
        # Projector: w1 (gate) and w3 (up) share one merged layer; silu(first) * second.
        r(proj + r"(?:w1|gate_proj)\.weight$", lambda m: Target("vision_backbone.image_projector.w13.weight", shard=0)),
        r(proj + r"(?:w3|up_proj)\.weight$", lambda m: Target("vision_backbone.image_projector.w13.weight", shard=1)),
        r(proj + r"(?:w2|down_proj)\.weight$", lambda m: Target("vision_backbone.image_projector.w2.weight")),
    ]


class WeightMapper:
    def __init__(self, base_vocab: int) -> None:
        self.rules = _rules(base_vocab)

    def target(self, name: str) -> Target | None:
        for pattern, make in self.rules:
            m = pattern.search(name)
            if m:
                return make(m)
        return None


def _copy_rows(param: nn.Parameter, tensor: torch.Tensor, first_row: int) -> None:
    """Write rows [first_row, first_row + len) of a (possibly vocab-parallel) embedding table."""
    shard = getattr(param, "_molmo2_vocab_shard", None)
    start, end = shard if shard is not None else (0, param.shape[0])
    lo, hi = max(start, first_row), min(end, first_row + tensor.shape[0])
    if lo < hi:
        param.data[lo - start:hi - start].copy_(tensor[lo - first_row:hi - first_row])


def load_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], mapper: WeightMapper,
                 skip: Callable[[str], bool] = lambda name: False) -> set[str]:
    from vllm.model_executor.model_loader.weight_utils import default_weight_loader

    # With LoRA enabled vLLM wraps the linear layers: their weights become `...base_layer.weight`,
    # and verl sends the base weights under those names too. Both sides are matched without it,
    # and the names returned are the model's own (vLLM compares them with named_parameters()).
    own = {n.replace(".base_layer.", "."): (n, p) for n, p in model.named_parameters()}
    loaded: set[str] = set()
    for name, tensor in _iterate(weights):
        target = mapper.target(name.replace(".base_layer.", "."))
        if target is None or target.param not in own or skip(target.param):
            continue
        own_name, param = own[target.param]
        with torch.no_grad():
            if target.row_offset is not None:
                _copy_rows(param, tensor, target.row_offset)
            else:
                loader = getattr(param, "weight_loader", default_weight_loader)
                if target.shard is None:
                    loader(param, tensor)
                else:
                    loader(param, tensor, target.shard)
        loaded.add(own_name)
    return loaded


def _iterate(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    yield from weights
