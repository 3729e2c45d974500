"""The batched recomputation of multimodal query rows against a plain dense reference.

Several requests of different lengths share one flat step, as in a vLLM prefill batch; each
request's multimodal rows must equal softmax attention under the original's mask (causal, plus
every multimodal token sees every multimodal token of its request), computed here in float64
one request at a time.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from molmo2_shim.model.bidirectional import BidirectionalPrefill, group_segments  # noqa: E402

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


@pytest.mark.parametrize("max_waste", [1.0, 1.5, 100.0])  # one group per request ... all in one
def test_rows_match_dense_reference(max_waste: float, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    requests = [
        request(12, [(1, 6)]),
        request(5, []),  # text only: untouched
        request(30, [(2, 9), (14, 25)]),  # two images, text between them
        request(9, [(0, 9)]),
    ]
    ids = torch.cat(requests)
    positions = torch.cat([torch.arange(len(r)) for r in requests])
    total = ids.shape[0]
    q = torch.randn(total, HEADS * DIM)
    k = torch.randn(total, KV_HEADS * DIM)
    v = torch.randn(total, KV_HEADS * DIM)
    causal_out = torch.randn(total, HEADS * DIM)  # stands in for the backend's causal result

    import molmo2_shim.model.bidirectional as bidir

    monkeypatch.setattr(bidir, "group_segments", lambda segs, dev: group_segments(segs, dev, max_waste))
    plan = BidirectionalPrefill([MM_ID])
    plan.note_input_ids(ids, has_mm_embeddings=True)
    plan.begin_step(positions)
    out = plan.apply(q, k, v, causal_out.clone(), HEADS, KV_HEADS, DIM, DIM**-0.5)
    plan.end_step()

    start = 0
    for r in requests:
        sl = slice(start, start + len(r))
        is_mm = r == MM_ID
        ref = dense_reference(q[sl], k[sl], v[sl], is_mm)
        got = out[sl]
        torch.testing.assert_close(got[is_mm].double(), ref[is_mm], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[~is_mm], causal_out[sl][~is_mm], atol=0, rtol=0)
        start += len(r)


def test_grouping_bounds_padding() -> None:
    from molmo2_shim.model.bidirectional import Segment

    def seg(start: int, length: int) -> Segment:
        rows = torch.arange(start, start + length)
        return Segment(start, length, rows, torch.ones(length, length, dtype=torch.bool))

    similar = [seg(0, 100), seg(100, 104), seg(204, 98)]
    assert len(group_segments(similar, torch.device("cpu"))) == 1
    mixed = [seg(0, 100), seg(100, 1000)]  # padding the short one to 1000 would be 1.8x the work
    groups = group_segments(mixed, torch.device("cpu"))
    assert sorted(g.shape for g in groups) == [(1, 100, 100), (1, 1000, 1000)]
