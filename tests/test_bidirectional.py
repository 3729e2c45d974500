"""The batched recomputation of multimodal query rows against a plain dense reference.

Several requests of different lengths share one flat step, as in a vLLM prefill batch; each
request's multimodal rows must equal softmax attention under the original's mask (causal, plus
every multimodal token sees every multimodal token of its request), computed here in float64
one request at a time. Both ways the shim computes them are checked: padded SDPA groups (CPU,
float32) and the runs packed for a fused variable-length kernel (GPU). The fused kernels need
CUDA, so here a plain per-sequence attention stands in for the kernel: what is tested is the
packing that feeds it (which keys each run sees, the offsets), not the kernel.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import molmo2_shim.model.bidirectional as bidir  # noqa: E402
from molmo2_shim.model.bidirectional import BidirectionalPrefill, Run, group_runs  # noqa: E402

pytestmark = pytest.mark.model

HEADS, KV_HEADS, DIM = 4, 2, 8
MM_ID, TEXT_ID = 7, 3


def request(length: int, mm_spans: list[tuple[int, int]]) -> torch.Tensor:
    ids = torch.full((length,), TEXT_ID)
    for a, b in mm_spans:
        ids[a:b] = MM_ID
    return ids


def dense_reference(q, k, v, is_mm: torch.Tensor) -> torch.Tensor:
    n = is_mm.shape[0]
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool)) | (is_mm[:, None] & is_mm[None, :])
    qh = q.double().view(n, HEADS, DIM).transpose(0, 1)
    kh = k.double().view(n, KV_HEADS, DIM).transpose(0, 1).repeat_interleave(HEADS // KV_HEADS, 0)
    vh = v.double().view(n, KV_HEADS, DIM).transpose(0, 1).repeat_interleave(HEADS // KV_HEADS, 0)
    scores = (qh @ kh.transpose(1, 2)) / math.sqrt(DIM)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(0, 1).reshape(n, HEADS * DIM)


REQUESTS = [
    request(12, [(1, 6)]),
    request(5, []),  # text only: untouched
    request(30, [(2, 9), (14, 25)]),  # two images, text between them
    request(9, [(0, 9)]),
    request(20, [(3, 5), (6, 8), (8, 12), (15, 16)]),  # short runs, one-token gaps, a one-token run
]


def per_sequence_kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale):  # noqa: ANN001, ANN201
    """The contract of a fused varlen kernel, one sequence at a time (no mask inside one)."""
    assert cu_q.dtype == torch.int32 and cu_k.dtype == torch.int32
    out = torch.empty_like(q)
    for i in range(cu_q.numel() - 1):
        a, b, c, d = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        assert b - a <= max_q and d - c <= max_k
        ks = k[c:d].repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        vs = v[c:d].repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        o = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1), scale=scale
        )
        out[a:b] = o.transpose(0, 1)
    return out


def run_step(kernel, monkeypatch: pytest.MonkeyPatch, max_waste: float = 1.5):  # noqa: ANN001, ANN201
    torch.manual_seed(0)
    ids = torch.cat(REQUESTS)
    positions = torch.cat([torch.arange(len(r)) for r in REQUESTS])
    total = ids.shape[0]
    q = torch.randn(total, HEADS * DIM)
    k = torch.randn(total, KV_HEADS * DIM)
    v = torch.randn(total, KV_HEADS * DIM)
    causal_out = torch.randn(total, HEADS * DIM)  # stands in for the backend's causal result
    monkeypatch.setattr(bidir, "fused_kernel_for", lambda q, head_dim: kernel)
    monkeypatch.setattr(bidir, "group_runs", lambda runs, dev: group_runs(runs, dev, max_waste))
    plan = BidirectionalPrefill([MM_ID])
    plan.note_input_ids(ids, has_mm_embeddings=True)
    plan.begin_step(positions)
    out = plan.apply(q, k, v, causal_out.clone(), HEADS, KV_HEADS, DIM, DIM**-0.5)
    plan.end_step()

    start = 0
    for r in REQUESTS:
        sl = slice(start, start + len(r))
        is_mm = r == MM_ID
        ref = dense_reference(q[sl], k[sl], v[sl], is_mm)
        got = out[sl]
        torch.testing.assert_close(got[is_mm].double(), ref[is_mm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[~is_mm], causal_out[sl][~is_mm], atol=0, rtol=0)
        start += len(r)


@pytest.mark.parametrize("max_waste", [1.0, 1.5, 100.0])  # one group per run ... all in one
def test_padded_groups_match_dense_reference(max_waste: float, monkeypatch: pytest.MonkeyPatch) -> None:
    run_step(None, monkeypatch, max_waste)


def test_packed_runs_match_dense_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    run_step(per_sequence_kernel, monkeypatch)


def test_kernel_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    q = torch.zeros(4, HEADS, DIM)
    monkeypatch.setenv(bidir.KERNEL_ENV, "sdpa")
    assert bidir.fused_kernel_for(q, DIM) is None
    monkeypatch.setenv(bidir.KERNEL_ENV, "auto")
    assert bidir.fused_kernel_for(q, DIM) is None  # CPU tensors: no fused kernel, padded SDPA
    monkeypatch.setenv(bidir.KERNEL_ENV, "torch-varlen")
    with pytest.raises(RuntimeError, match="not available for torch.float32 on cpu"):
        bidir.fused_kernel_for(q, DIM)
    monkeypatch.setenv(bidir.KERNEL_ENV, "flash")
    with pytest.raises(ValueError, match="expected one of auto, vllm-flash, torch-varlen, sdpa"):
        bidir.fused_kernel_for(q, DIM)


def test_grouping_bounds_padding() -> None:
    def run(start: int, length: int) -> Run:
        rows = torch.arange(start, start + length)
        return Run(rows, rows)

    similar = [run(0, 100), run(100, 104), run(204, 98)]
    assert len(group_runs(similar, torch.device("cpu"))) == 1
    mixed = [run(0, 100), run(100, 1000)]  # padding the short one to 1000 would be 1.8x the work
    groups = group_runs(mixed, torch.device("cpu"))
    assert sorted(g.shape for g in groups) == [(1, 100, 100), (1, 1000, 1000)]
