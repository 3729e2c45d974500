"""The ViT's fused float32 attention (molmo2_shim/model/float32_attention.py) and its choice.

The kernel itself runs under Triton's CPU interpreter here (in a child process: the
interpreter is chosen when Triton is imported, and vLLM decides about Triton at its own import),
against float64 attention, on the shapes that exercise its masks: a length that is not a
multiple of the tiles, head size 72 padded to 128, q/k/v as strided views of one projection.
The interpreter gets bf16 dots wrong, so there the kernel takes float32 operands without the
bf16 split; the split's arithmetic is checked on its own below, and the compiled GPU kernel
against float64 in benchmarks/gpu/kernels.py (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from molmo2_shim.model import float32_attention as fa  # noqa: E402

pytestmark = pytest.mark.model

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.nn.functional as F
    import molmo2_shim.model.float32_attention as fa
    from molmo2_shim.model.float32_attention import triton_float32_attention, use_triton_for

    batch, length, heads, dim, max_grid = map(int, sys.argv[1:6])
    fa.MAX_GRID_Y = max_grid  # small here: several launches, as for a huge encoder batch
    torch.manual_seed(length)
    qkv = (torch.randn(batch, length, 3 * heads * dim) * 3).to(torch.bfloat16)
    q, k, v = (t.view(batch, length, heads, dim) for t in qkv.split(heads * dim, -1))
    assert use_triton_for(q)
    out = triton_float32_attention(q, k, v, dim ** -0.5)
    exact = F.scaled_dot_product_attention(
        *(t.transpose(1, 2).double() for t in (q, k, v)), scale=dim ** -0.5).transpose(1, 2)
    print(json.dumps({
        "dtype": str(out.dtype), "shape": list(out.shape),
        "max_err": (out.double() - exact).abs().max().item(),
        "share_off": (out != exact.to(torch.bfloat16)).double().mean().item(),
    }))
    """
)


@pytest.mark.parametrize(("shape", "max_grid"), [((2, 150, 2, 72), 65535), ((3, 64, 1, 16), 65535), ((5, 200, 3, 40), 7)])
def test_kernel_under_the_interpreter_matches_float64(shape: tuple[int, int, int, int], max_grid: int) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", MOLMO2_SHIM_VIT_KERNEL="triton")
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, shape), str(max_grid)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["dtype"] == "torch.bfloat16" and res["shape"] == list(shape)
    # The output is bf16: at most one rounding step of bf16 at the outputs' size (|out| < 8 here).
    assert res["max_err"] <= 2.0**-5, res
    # float32 arithmetic rounded once: nearly every output is float64's own bf16 rounding.
    assert res["share_off"] < 0.01, res


def test_three_bf16_parts_hold_a_float32_exactly() -> None:
    """The kernel's split of float32 probabilities, p = p1 + p2 + p3 with bf16 parts, in torch:
    exact for every probability above 1e-30 (a softmax row holds a 1, so smaller ones are below
    float32's resolution of the row's sum anyway), so each partial product with bf16 v is exact."""
    torch.manual_seed(0)
    p = torch.rand(200_000, dtype=torch.float32) ** 8  # down to ~1e-42: subnormal float32 too
    p1 = p.to(torch.bfloat16)
    rest = p - p1.float()
    p2 = rest.to(torch.bfloat16)
    p3 = (rest - p2.float()).to(torch.bfloat16)
    total = p1.double() + p2.double() + p3.double()
    normal = p > 1e-30
    assert int(normal.sum()) > 150_000 and int((~normal).sum()) > 20
    assert torch.equal(total[normal], p.double()[normal])
    assert (total - p.double()).abs().max().item() < 1e-40
    # and two parts would not be enough (the reason for three dots rather than two)
    assert not torch.equal(p1.double() + p2.double(), p.double())


def test_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    q = torch.zeros(1, 4, 1, 8, dtype=torch.bfloat16)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(fa.KERNEL_ENV, raising=False)
    assert not fa.use_triton_for(q)  # auto on the CPU: SDPA in float32, as the original
    monkeypatch.setenv(fa.KERNEL_ENV, "sdpa")
    assert not fa.use_triton_for(q)
    monkeypatch.setenv(fa.KERNEL_ENV, "triton")
    with pytest.raises(ValueError, match="MOLMO2_SHIM_VIT_KERNEL=triton: the kernel needs bf16 on a CUDA device"):
        fa.use_triton_for(q)
    monkeypatch.setenv(fa.KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="expected one of auto, triton, sdpa"):
        fa.use_triton_for(q)
    with pytest.raises(ValueError, match="takes bf16 q, k, v"):
        fa.triton_float32_attention(q.float(), q.float(), q.float(), 1.0)


def test_auto_falls_back_to_sdpa_once_when_the_kernel_fails(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A kernel that cannot compile on some GPU/Triton pair must not take the ViT down under
    `auto`: one warning, then SDPA (the original's kernel) for the process; `triton` raises."""
    q = torch.zeros(1, 4, 1, 16, dtype=torch.bfloat16)
    calls = []

    def failing(*args: object) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("out of resource: shared memory")

    monkeypatch.setattr(fa, "use_triton_for", lambda q: True)  # as on a CUDA device
    monkeypatch.setattr(fa, "triton_float32_attention", failing)
    monkeypatch.setattr(fa, "_auto_disabled", None)
    monkeypatch.setenv(fa.KERNEL_ENV, "triton")
    with pytest.raises(RuntimeError, match="out of resource"):
        fa.fused_float32_attention(q, q, q, 1.0)
    monkeypatch.delenv(fa.KERNEL_ENV)
    with caplog.at_level("WARNING", logger="molmo2_shim"):
        assert fa.fused_float32_attention(q, q, q, 1.0) is None
        assert fa.fused_float32_attention(q, q, q, 1.0) is None
    assert len(calls) == 2  # the `triton` call and the first `auto` call; not retried after that
    assert "out of resource" in caplog.text and "MOLMO2_SHIM_VIT_KERNEL=sdpa" in caplog.text
