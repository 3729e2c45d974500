"""Molmo2 vision path: ViT, 2-layer feature tap, attention pooling and SwiGLU projector.

Built from vLLM's tensor-parallel linear layers so the tower shards with the text model
(attention heads and MLP columns split across ranks, row-parallel outputs reduced). The
attention honours `float32_attention` the way the original does (q, k and v in float32): torch
SDPA on every vLLM version and platform, and for the ViT on GPUs a Triton kernel with the same
float32 arithmetic on bf16 tensor cores (float32_attention.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import SiluAndMul, get_act_fn
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)

from .float32_attention import fused_float32_attention


def _heads_per_rank(total: int, what: str) -> int:
    tp = get_tensor_model_parallel_world_size()
    if total % tp:
        raise ValueError(f"{what} has {total} heads, which tensor parallel size {tp} does not divide")
    return total // tp


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, fp32: bool) -> torch.Tensor:
    """[B, L, H, D] attention without causality; float32 math when the config asks for it
    (on GPUs through the Triton kernel that computes it on bf16 tensor cores, see
    float32_attention.py; elsewhere SDPA in float32, as the original)."""
    dtype = q.dtype
    if fp32 and mask is None and q.shape == k.shape:
        fused = fused_float32_attention(q, k, v, scale)
        if fused is not None:
            return fused
    if fp32:
        q, k, v = q.float(), k.float(), v.float()
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2).to(dtype)


class VitAttention(nn.Module):
    def __init__(self, cfg: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.num_heads = _heads_per_rank(cfg.num_attention_heads, "the ViT")
        self.num_kv_heads = _heads_per_rank(cfg.num_key_value_heads, "the ViT")
        self.fp32 = bool(getattr(cfg, "float32_attention", True))
        self.qkv = QKVParallelLinear(
            cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads,
            bias=True, quant_config=quant_config, prefix=f"{prefix}.qkv", return_bias=False,
        )
        self.wo = RowParallelLinear(
            cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size,
            bias=True, quant_config=quant_config, prefix=f"{prefix}.wo", return_bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim], -1
        )
        q = q.view(b, n, self.num_heads, self.head_dim)
        k = k.view(b, n, self.num_kv_heads, self.head_dim)
        v = v.view(b, n, self.num_kv_heads, self.head_dim)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        out = sdpa(q, k, v, None, self.head_dim**-0.5, self.fp32)
        return self.wo(out.reshape(b, n, -1))


class VitMLP(nn.Module):
    def __init__(self, cfg: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.w1 = ColumnParallelLinear(
            cfg.hidden_size, cfg.intermediate_size, bias=True,
            quant_config=quant_config, prefix=f"{prefix}.w1", return_bias=False,
        )
        self.act = get_act_fn(cfg.hidden_act)
        self.w2 = RowParallelLinear(
            cfg.intermediate_size, cfg.hidden_size, bias=True,
            quant_config=quant_config, prefix=f"{prefix}.w2", return_bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


class VitBlock(nn.Module):
    def __init__(self, cfg: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.attention = VitAttention(cfg, quant_config, f"{prefix}.attention")
        self.feed_forward = VitMLP(cfg, quant_config, f"{prefix}.feed_forward")
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class VisionTransformer(nn.Module):
    """Patch embedding with bias, learned positions (no class token), pre-norm blocks.

    Only the blocks up to the deepest tapped layer exist: the checkpoints store no others.
    """

    def __init__(self, cfg: Any, num_blocks: int, quant_config: Any, prefix: str) -> None:
        super().__init__()
        patch = cfg.image_patch_size
        # Full precision under any quantisation, as vLLM's vision towers keep their patch
        # embeddings (its input width, 588 for 14x14 patches, is not one fp8 GEMMs accept).
        self.patch_embedding = ReplicatedLinear(
            patch * patch * 3, cfg.hidden_size, bias=True,
            quant_config=None, prefix=f"{prefix}.patch_embedding", return_bias=False,
        )
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.image_num_pos, cfg.hidden_size))
        self.blocks = nn.ModuleList(
            VitBlock(cfg, quant_config, f"{prefix}.transformer.resblocks.{i}") for i in range(num_blocks)
        )

    def positions_for(self, num_patches: int, dtype: torch.dtype) -> torch.Tensor:
        pos = self.positional_embedding
        side = int(math.isqrt(pos.shape[0]))
        want = int(math.isqrt(num_patches))
        if want != side:
            # Only reached for crop sizes other than the checkpoint's (never for the released
            # configs); resized as the original does: bicubic, antialiased.
            grid = pos.reshape(side, side, -1).permute(2, 0, 1)[None]
            grid = F.interpolate(grid, size=(want, want), mode="bicubic", align_corners=False, antialias=True)
            pos = grid[0].permute(1, 2, 0).reshape(want * want, -1)
        return pos.to(dtype)

    def forward(self, patches: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
        x = self.patch_embedding(patches)
        x = x + self.positions_for(x.shape[1], x.dtype)[None]
        wanted = set(taps)
        outputs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outputs[i] = x
        return [outputs[i] for i in taps]


class PoolingAttention(nn.Module):
    """Attention of one query (mean of the valid patches) over a pooling window."""

    def __init__(self, cfg: Any, input_dim: int, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.num_heads = _heads_per_rank(cfg.num_attention_heads, "the image pooling")
        self.num_kv_heads = _heads_per_rank(cfg.num_key_value_heads, "the image pooling")
        self.fp32 = bool(getattr(cfg, "float32_attention", True))
        self.masked = bool(getattr(cfg, "pooling_attention_mask", True))
        self.wq = ColumnParallelLinear(
            input_dim, cfg.num_attention_heads * cfg.head_dim, bias=True,
            quant_config=quant_config, prefix=f"{prefix}.wq", return_bias=False,
        )
        self.wkv = MergedColumnParallelLinear(
            input_dim, [cfg.num_key_value_heads * cfg.head_dim] * 2, bias=True,
            quant_config=quant_config, prefix=f"{prefix}.wkv", return_bias=False,
        )
        self.wo = RowParallelLinear(
            cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, bias=True,
            quant_config=quant_config, prefix=f"{prefix}.wo", return_bias=False,
        )

    def forward(self, to_pool: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        n, window, _ = to_pool.shape
        if self.masked:
            count = valid.sum(-1, keepdim=True).clamp(min=1).to(to_pool.dtype)
            query = to_pool.sum(1) / count
            mask = valid[:, None, None, :]
        else:
            query = to_pool.mean(1)
            mask = None
        q = self.wq(query).view(n, 1, self.num_heads, self.head_dim)
        k, v = self.wkv(to_pool).chunk(2, dim=-1)
        k = k.reshape(n, window, self.num_kv_heads, self.head_dim)
        v = v.reshape(n, window, self.num_kv_heads, self.head_dim)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        out = sdpa(q, k, v, mask, self.head_dim**-0.5, self.fp32)
        return self.wo(out.reshape(n, -1))


class ImageProjector(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 and w3 are one merged column-parallel matmul."""

    def __init__(self, cfg: Any, quant_config: Any, prefix: str) -> None:
        super().__init__()
        self.w13 = MergedColumnParallelLinear(
            cfg.hidden_size, [cfg.intermediate_size] * 2, bias=False,
            quant_config=quant_config, prefix=f"{prefix}.w13", return_bias=False,
        )
        self.act = SiluAndMul()
        self.w2 = RowParallelLinear(
            cfg.intermediate_size, cfg.text_hidden_size, bias=False,
            quant_config=quant_config, prefix=f"{prefix}.w2", return_bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w13(x)))


class VisionBackbone(nn.Module):
    """Crops -> ViT taps -> pooled, projected features, one row per <im_patch> token."""

    def __init__(self, vit_cfg: Any, adapter_cfg: Any, quant_config: Any = None, prefix: str = "") -> None:
        super().__init__()
        depth = vit_cfg.num_hidden_layers
        self.taps = [layer if layer >= 0 else layer + depth for layer in adapter_cfg.vit_layers]
        self.image_vit = VisionTransformer(vit_cfg, max(self.taps) + 1, quant_config, f"{prefix}.image_vit")
        pool_dim = vit_cfg.hidden_size * len(self.taps)
        self.image_pooling_2d = PoolingAttention(adapter_cfg, pool_dim, quant_config, f"{prefix}.image_pooling_2d")
        self.image_projector = ImageProjector(adapter_cfg, quant_config, f"{prefix}.image_projector")

    @property
    def dtype(self) -> torch.dtype:
        return self.image_vit.positional_embedding.dtype

    def forward(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        """pixel_values [crops, patches, 588]; pooling [tokens, window] indices into crops*patches.

        Rows whose window is entirely padding are dropped, as the original does.
        """
        crops, patches, _ = pixel_values.shape
        feats = torch.cat(self.image_vit(pixel_values.to(self.dtype), self.taps), dim=-1)
        feats = feats.reshape(crops * patches, -1)
        valid = pooling >= 0
        to_pool = feats[pooling.clamp(min=0)] * valid[..., None].to(feats.dtype)
        keep = valid.any(-1)
        if not bool(keep.all()):
            to_pool, valid = to_pool[keep], valid[keep]
        return self.image_projector(self.image_pooling_2d(to_pool, valid))
