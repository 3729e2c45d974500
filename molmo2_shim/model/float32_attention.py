"""The ViT's float32 attention as one fused kernel on GPUs, with float32 arithmetic.

The original runs the ViT's attention in float32 when the config says `float32_attention`
(every released Molmo2 checkpoint): q, k and v are cast up and torch SDPA picks its float32
kernel, a CUDA-core kernel about 10x slower than the bf16 FlashAttention native vLLM uses. On
a 32-image batch that is a third of the shim's GPU time (docs/benchmarks.md).

This kernel gets float32 results from bf16 tensor cores, because the operands allow it:

- q and k are bf16 values (the projections' outputs), so every product q_i * k_j is exact in
  float32 and a bf16 tensor-core dot with float32 accumulation computes q.k as float32 does,
  up to the order of the sum;
- the softmax runs online in float32 (running max, rescaled sums), as a fused kernel must;
- the probabilities are float32 and v is bf16: each probability is split into three bf16
  parts p = p1 + p2 + p3 (each the rounding of what the previous parts leave; three 8-bit
  significands hold float32's 24 bits), so P @ V is three exact-product dots summed in float32.

What differs from SDPA's float32 kernel is the order of float32 additions (and the exp
implementation): differences of float32 rounding size, far below the bf16 rounding of the
output. tests/test_float32_attention.py checks it against a float64 reference (under Triton's
interpreter on the CPU); the GPU figures are in docs/benchmarks.md.

Only used on CUDA with Triton, bf16 inputs and equal-length sequences (the ViT's crops);
MOLMO2_SHIM_VIT_KERNEL picks it (auto, triton, sdpa).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import NamedTuple

import torch

logger = logging.getLogger("molmo2_shim")

KERNEL_ENV = "MOLMO2_SHIM_VIT_KERNEL"
KERNEL_CHOICES = ("auto", "triton", "sdpa")

# Why the kernel stopped being used in this process (auto only), or None.
_auto_disabled: str | None = None


class Tiles(NamedTuple):
    """The kernel's launch shape: query rows and keys per block, warps, pipeline stages."""

    block_m: int
    block_n: int
    warps: int
    stages: int


# The fastest of the tile shapes benchmarks/gpu/kernels.py sweeps on an H200 for Molmo2's ViT
# (729 tokens per crop, head size 72 padded to 128); docs/benchmarks.md has the sweep. Fixed
# rather than autotuned, so that the ViT's outputs do not depend on a timing race at start-up.
DEFAULT_TILES = Tiles(block_m=128, block_n=32, warps=4, stages=2)
# CUDA's limit on a grid's second dimension (batch x heads here); larger batches take several launches.
MAX_GRID_Y = 65535


@functools.lru_cache(maxsize=1)
def _kernel():  # type: ignore[no-untyped-def]
    """Compiled lazily: Triton is imported only where the kernel is chosen."""
    import triton
    import triton.language as tl

    @triton.jit
    def attention_fwd(q_ptr, k_ptr, v_ptr, o_ptr,
                      q_sb, q_sl, q_sh, k_sb, k_sl, k_sh, v_sb, v_sl, v_sh, o_sb, o_sl, o_sh,
                      heads, length, scale,
                      HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      SPLIT: tl.constexpr):
        block = tl.program_id(0)
        bh = tl.program_id(1)
        # The (crop, head) offsets in 64 bits, once per program: a large encoder batch passes
        # 2**31 elements (about 850 crops of q/k/v views into one projection). The offsets
        # within a head stay 32-bit.
        b = (bh // heads).to(tl.int64)
        h = bh % heads
        q_ptr += b * q_sb + h * q_sh
        k_ptr += b * k_sb + h * k_sh
        v_ptr += b * v_sb + h * v_sh
        o_ptr += b * o_sb + h * o_sh
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        cols = tl.arange(0, BLOCK_N)
        dim_ok = dims < HEAD_DIM
        q = tl.load(q_ptr + rows[:, None] * q_sl + dims[None, :],
                    mask=(rows[:, None] < length) & dim_ok[None, :], other=0.0)
        row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        row_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, length, BLOCK_N):
            keys = start + cols
            key_ok = keys < length
            kt = tl.load(k_ptr + keys[None, :] * k_sl + dims[:, None],
                         mask=key_ok[None, :] & dim_ok[:, None], other=0.0)
            s = tl.dot(q, kt, input_precision="ieee") * scale  # exact products for bf16 operands
            s = tl.where(key_ok[None, :], s, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(s, 1))
            p = tl.exp(s - new_max[:, None])
            rescale = tl.exp(row_max - new_max)
            row_sum = row_sum * rescale + tl.sum(p, 1)
            v = tl.load(v_ptr + keys[:, None] * v_sl + dims[None, :],
                        mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
            # p (float32) as three bf16 parts, each the rounding of what the earlier parts leave;
            # their products with bf16 v are exact, so three dots sum P @ V in float32.
            if SPLIT:
                p1 = p.to(tl.bfloat16)
                rest = p - p1.to(tl.float32)
                p2 = rest.to(tl.bfloat16)
                p3 = (rest - p2.to(tl.float32)).to(tl.bfloat16)
                acc = tl.dot(p1, v, acc * rescale[:, None])
                acc = tl.dot(p2, v, acc)
                acc = tl.dot(p3, v, acc)
            else:  # Triton's CPU interpreter: float32 operands, plain float32 dots
                acc = tl.dot(p, v, acc * rescale[:, None], input_precision="ieee")
            row_max = new_max
        out = acc / row_sum[:, None]
        tl.store(o_ptr + rows[:, None] * o_sl + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=(rows[:, None] < length) & dim_ok[None, :])

    return attention_fwd


def triton_float32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                             tiles: Tiles = DEFAULT_TILES) -> torch.Tensor:
    """softmax(q k^T * scale) v in float32 arithmetic for [batch, length, heads, head_dim]
    bf16 tensors (strided views are fine), without causality; the output in bf16. `tiles` is
    for benchmarks (the sums' order changes with block_n, never their float32 precision)."""
    import triton

    if q.dtype != torch.bfloat16 or k.dtype != q.dtype or v.dtype != q.dtype:
        # fp16 values are not all exact in bf16, and float32 inputs would need more parts.
        raise ValueError(f"the Triton float32 attention takes bf16 q, k, v, not {q.dtype}/{k.dtype}/{v.dtype}")
    batch, length, heads, dim = q.shape
    if k.shape != q.shape or v.shape != q.shape or any(t.stride(-1) != 1 for t in (q, k, v)):
        raise ValueError("the Triton float32 attention takes q, k, v of one shape with contiguous heads")
    # Triton's CPU interpreter (the tests) gets bf16 dots and roundings wrong, so there the
    # operands and the output are the same values in float32 and the probabilities are not
    # split (the GPU path is checked against float64 by benchmarks/gpu/kernels.py).
    interpreted = not q.is_cuda
    if interpreted:
        q, k, v = q.float(), k.float(), v.float()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    per_launch = max(1, MAX_GRID_Y // heads)
    for first in range(0, batch, per_launch):
        part = slice(first, min(batch, first + per_launch))
        grid = (triton.cdiv(length, tiles.block_m), (part.stop - part.start) * heads)
        _kernel()[grid](
            q[part], k[part], v[part], out[part],
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            heads, length, scale,
            HEAD_DIM=dim, BLOCK_D=max(16, triton.next_power_of_2(dim)), BLOCK_M=tiles.block_m,
            BLOCK_N=tiles.block_n, SPLIT=not interpreted, num_warps=tiles.warps, num_stages=tiles.stages,
        )
    return out.to(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton_for(q: torch.Tensor) -> bool:
    """Whether the ViT's float32 attention on q goes through the Triton kernel.
    MOLMO2_SHIM_VIT_KERNEL: auto (the kernel on CUDA for bf16 when Triton is installed), triton
    (required: an error where it cannot run), sdpa (torch SDPA in float32, as the original)."""
    choice = os.environ.get(KERNEL_ENV, "auto")
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={choice!r}: expected one of {', '.join(KERNEL_CHOICES)}")
    if choice == "sdpa":
        return False
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)
    usable = (q.is_cuda or interpreted) and q.dtype == torch.bfloat16 and triton_available()
    if choice == "triton" and not usable:
        raise ValueError(
            f"{KERNEL_ENV}=triton: the kernel needs bf16 on a CUDA device with Triton installed "
            f"(here: {q.dtype} on {q.device}, Triton {'present' if triton_available() else 'missing'}); "
            "unset it to choose automatically"
        )
    return usable and (choice == "triton" or q.is_cuda)


def fused_float32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor | None:
    """The Triton kernel's result where it is chosen, else None (the caller runs SDPA in float32).
    Under `auto`, a kernel that fails to compile or launch here (another GPU, another Triton) is
    reported once and SDPA takes over for the process: the original's own kernel, so nothing
    inexact; under `triton` the error propagates."""
    global _auto_disabled
    if _auto_disabled is not None or not use_triton_for(q):
        return None
    try:
        return triton_float32_attention(q, k, v, scale)
    except Exception as exc:
        if os.environ.get(KERNEL_ENV, "auto") == "triton":
            raise
        _auto_disabled = f"{type(exc).__name__}: {exc}"
        logger.warning("molmo2-shim: the Triton float32 ViT attention failed here (%s); the ViT uses torch SDPA in "
                       "float32 from now on (set %s=sdpa to skip the attempt)", _auto_disabled, KERNEL_ENV)
        return None
