"""The original's prefill mask: causal, plus every image/video token sees every other one.

vLLM's attention backends only do causal attention. The original model (through
`token_type_ids`) lets each multimodal token attend to ALL multimodal tokens of the sequence,
later images included, during prefill; text tokens stay causal and decode is causal. Dropping
that changes the logits a lot (the golden data measures up to ~8 on the tiny model), which in
RL shows up as a gap between rollout and trainer log-probs.

So after vLLM's attention has run (and written the KV cache), the rows of multimodal queries
are recomputed with the original mask over the keys of the same step and written over vLLM's
output. This is exact when a request's whole multimodal region, from position 0 on, is
computed in one step. The scheduler patches (molmo2_shim.patches.scheduling, rules in
molmo2_shim.engine.scheduling) make that the case: a prefix cache hit either covers the whole
region or is dropped, and the region is never split across prefill chunks. When a request
breaks that rule anyway (a region larger than max_num_batched_tokens), its rows keep vLLM's
causal result and a warning says which setting removes the deviation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.features import query_start_loc

logger = logging.getLogger("molmo2_shim")


@dataclass
class Segment:
    """One request's multimodal region inside the flat token batch of a step (CPU tensors)."""

    start: int  # flat index of the request's first token (position 0)
    length: int  # tokens from position 0 through its last multimodal token
    rows: torch.Tensor  # flat indices of its multimodal tokens (the queries to redo)
    allowed: torch.Tensor  # [len(rows), length] bool: what each of those queries may attend to


@dataclass
class Group:
    """Segments of similar size padded into one attention call (device tensors).

    Per-request calls cost a handful of kernel launches per request and layer, which on a GPU
    batch of image prompts adds up to a sizeable share of prefill time.
    """

    query_index: torch.Tensor  # [S*Lq] flat rows gathered as queries (padding repeats a real row)
    key_index: torch.Tensor  # [S*Lk] flat rows gathered as keys/values (padding likewise)
    mask: torch.Tensor  # [S, 1, Lq, Lk] bool; padded keys are never allowed
    real_queries: torch.Tensor  # positions in [S*Lq] that are real queries
    rows: torch.Tensor  # their flat rows, in the same order
    shape: tuple[int, int, int]  # S, Lq, Lk


def group_segments(segments: list[Segment], device: torch.device, max_waste: float = 1.5) -> list[Group]:
    """Pack segments into padded groups, starting a new group when padding would exceed
    `max_waste` times the attention area the group's segments really need."""
    groups: list[list[Segment]] = []
    for seg in sorted(segments, key=lambda g: (g.length, len(g.rows))):
        if groups:
            cand = groups[-1] + [seg]
            padded = len(cand) * max(len(g.rows) for g in cand) * max(g.length for g in cand)
            if padded <= max_waste * sum(len(g.rows) * g.length for g in cand):
                groups[-1] = cand
                continue
        groups.append([seg])
    return [_pack(members, device) for members in groups]


def _pack(members: list[Segment], device: torch.device) -> Group:
    n, lq, lk = len(members), max(len(g.rows) for g in members), max(g.length for g in members)
    query_index = torch.empty(n, lq, dtype=torch.long)
    key_index = torch.empty(n, lk, dtype=torch.long)
    mask = torch.zeros(n, 1, lq, lk, dtype=torch.bool)
    real = torch.zeros(n, lq, dtype=torch.bool)
    for i, seg in enumerate(members):
        r = len(seg.rows)
        query_index[i, :r] = seg.rows
        query_index[i, r:] = seg.rows[0]
        key_index[i] = seg.start + torch.arange(lk).clamp(max=seg.length - 1)
        mask[i, 0, :r, : seg.length] = seg.allowed
        mask[i, 0, r:, 0] = True  # padded queries see one key (no NaN); their output is dropped
        real[i, :r] = True
    real_queries = torch.nonzero(real.reshape(-1)).squeeze(1)
    return Group(
        query_index.reshape(-1).to(device), key_index.reshape(-1).to(device), mask.to(device),
        real_queries.to(device), query_index.reshape(-1)[real_queries].to(device), (n, lq, lk),
    )


class BidirectionalPrefill:
    """Per-step plan shared by the decoder layers of one model.

    The decoder layers reach it through the `molmo2_shim::bidirectional_prefill` op (below),
    which vLLM's compiler treats as a graph split like its own attention op: the recomputation
    runs eagerly on prefill steps, while decode steps (no plan) stay capturable in CUDA graphs.
    """

    def __init__(self, mm_token_ids: Sequence[int], enabled: bool = True, profile_tokens: int | None = None) -> None:
        self.enabled = enabled
        self._mm_ids = torch.tensor(sorted(set(int(t) for t in mm_token_ids)), dtype=torch.long)
        self._pending: torch.Tensor | None = None
        self.groups: list[Group] = []
        self._warned = False
        # vLLM sizes the KV cache from the memory peak of a dummy step of max_num_batched_tokens
        # tokens, which has no images; the first such step also runs the largest recomputation a
        # real step can need (every token an image row), so its buffers are in that peak.
        self._profile_tokens = profile_tokens if enabled else None

    def note_input_ids(self, input_ids: torch.Tensor, has_mm_embeddings: bool) -> None:
        """Called where the step's token ids are embedded; cheap and sync-free on decode steps."""
        if not has_mm_embeddings or not self.enabled:
            self._pending = None
            return
        ids = self._mm_ids.to(input_ids.device)
        self._pending = torch.isin(input_ids, ids)

    def begin_step(self, positions: torch.Tensor) -> None:
        global _ACTIVE
        self.groups = []
        _ACTIVE = None
        pending, self._pending = self._pending, None
        if pending is None:
            if self._profile_tokens is not None and positions.shape[0] >= self._profile_tokens:
                self._profile_tokens = None
                self.groups = self._worst_case(int(positions.shape[0]), positions.device)
                _ACTIVE = self
            return
        num = pending.shape[0]
        is_mm = pending.cpu()
        pos = positions[:num].cpu()
        segments = []
        for start, end in _request_spans(pos):
            local = is_mm[start:end]
            if not bool(local.any()):
                continue
            if int(pos[start]) != 0:
                self._warn_partial(int(pos[start]))
                continue
            rows = torch.nonzero(local).squeeze(1)
            length = int(rows[-1]) + 1
            cols = torch.arange(length)
            allowed = (cols[None, :] <= rows[:, None]) | local[:length][None, :]
            segments.append(Segment(start, length, rows + start, allowed))
        self.groups = group_segments(segments, positions.device)
        if self.groups:
            _ACTIVE = self

    @staticmethod
    def _worst_case(tokens: int, device: torch.device) -> list[Group]:
        rows = torch.arange(tokens)
        return group_segments([Segment(0, tokens, rows, torch.ones(tokens, tokens, dtype=torch.bool))], device)

    def end_step(self) -> None:
        global _ACTIVE
        self.groups = []
        _ACTIVE = None

    def apply(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float,
    ) -> torch.Tensor:
        """Overwrite the multimodal query rows of `out` ([T, heads*dim]) with the original mask."""
        for g in self.groups:
            n, lq, lk = g.shape
            qs = q.index_select(0, g.query_index).view(n, lq, num_heads, head_dim).transpose(1, 2)
            ks = k.index_select(0, g.key_index).view(n, lk, num_kv_heads, head_dim).transpose(1, 2)
            vs = v.index_select(0, g.key_index).view(n, lk, num_kv_heads, head_dim).transpose(1, 2)
            if num_kv_heads != num_heads:
                rep = num_heads // num_kv_heads
                ks, vs = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=g.mask, scale=scale)
            o = o.transpose(1, 2).reshape(n * lq, num_heads * head_dim)
            out.index_copy_(0, g.rows, o.index_select(0, g.real_queries).to(out.dtype))
        return out

    def _warn_partial(self, first_position: int) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "molmo2-shim: a request's image tokens were computed in a step that starts at position %d, "
            "so they attend causally instead of bidirectionally as in the original model. This happens "
            "when an image region is longer than max_num_batched_tokens (or when the shim's scheduler "
            "patches are not active in the engine process). Raise --max-num-batched-tokens above the "
            "prompt's image tokens, or check `molmo2-shim doctor`.",
            first_position,
        )


def _request_spans(positions: torch.Tensor) -> list[tuple[int, int]]:
    """Per-request [start, end) in the flat batch, from the attention metadata when present."""
    qsl = query_start_loc(int(positions.shape[0]))
    if qsl is not None:
        return [(int(a), int(b)) for a, b in zip(qsl[:-1], qsl[1:]) if b > a]
    # A request restarts where positions stop increasing by one.
    breaks = torch.nonzero(positions[1:] != positions[:-1] + 1).squeeze(1) + 1
    edges = [0, *breaks.tolist(), int(positions.shape[0])]
    return list(zip(edges[:-1], edges[1:]))


# The plan of the step being computed, if it has multimodal rows (one engine per process).
_ACTIVE: BidirectionalPrefill | None = None
OP_NAME = "molmo2_shim::bidirectional_prefill"


@torch.library.custom_op(OP_NAME, mutates_args=("out",))
def bidirectional_prefill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
) -> None:
    """Overwrite the multimodal rows of an attention output with the original's mask (no-op on
    steps without them). Opaque to torch.compile on purpose; see BidirectionalPrefill."""
    plan = _ACTIVE
    if plan is not None and plan.groups:
        plan.apply(q, k, v, out, num_heads, num_kv_heads, head_dim, scale)


@bidirectional_prefill.register_fake
def _(q, k, v, out, num_heads, num_kv_heads, head_dim, scale) -> None:  # noqa: ANN001
    return None
