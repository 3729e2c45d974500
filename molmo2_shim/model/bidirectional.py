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
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.features import VarlenKernel, query_start_loc, varlen_kernels

logger = logging.getLogger("molmo2_shim")


@dataclass
class Run:
    """Consecutive multimodal query rows of one request, which all attend to the same keys.

    A multimodal query at position p may see every key at or before p and every multimodal key.
    Inside a run of multimodal tokens with no text between them, the keys at or before p that
    are not multimodal are exactly the text tokens before the run. So the whole run attends,
    without a mask, to the request's tokens before the run plus its multimodal tokens from the
    run on: one dense attention per run, which fused variable-length kernels can compute.
    """

    queries: torch.Tensor  # flat rows of the run's tokens (CPU)
    keys: torch.Tensor  # flat rows of the keys the run attends to, ascending (CPU)


@dataclass
class Packed:
    """All runs of a step laid end to end for a variable-length attention call (device tensors)."""

    query_rows: torch.Tensor  # [Q] flat rows gathered as queries, run after run
    key_rows: torch.Tensor  # [K] flat rows gathered as keys/values, run after run
    cu_queries: torch.Tensor  # [runs+1] int32 offsets into query_rows
    cu_keys: torch.Tensor  # [runs+1] int32 offsets into key_rows
    max_queries: int
    max_keys: int


@dataclass
class Group:
    """Runs of similar size padded into one masked attention call (device tensors): the path for
    devices and dtypes without a fused variable-length kernel (the CPU, float32).

    Per-run calls cost a handful of kernel launches per run and layer, which on a batch of image
    prompts adds up to a sizeable share of prefill time.
    """

    query_index: torch.Tensor  # [S*Lq] flat rows gathered as queries (padding repeats a real row)
    key_index: torch.Tensor  # [S*Lk] flat rows gathered as keys/values (padding likewise)
    mask: torch.Tensor  # [S, 1, 1, Lk] bool: the run's real keys
    real_queries: torch.Tensor  # positions in [S*Lq] that are real queries
    rows: torch.Tensor  # their flat rows, in the same order
    shape: tuple[int, int, int]  # S, Lq, Lk


def request_runs(start: int, is_mm: torch.Tensor) -> list[Run]:
    """The runs of one request whose flat batch rows begin at `start` (its position 0)."""
    rows = torch.nonzero(is_mm).squeeze(1)
    if rows.numel() == 0:
        return []
    breaks = (torch.nonzero(rows[1:] != rows[:-1] + 1).squeeze(1) + 1).tolist()
    bounds = [0, *breaks, rows.numel()]
    runs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        first = int(rows[a])
        keys = torch.cat([torch.arange(first), rows[a:]])
        runs.append(Run(rows[a:b] + start, keys + start))
    return runs


def pack_runs(runs: list[Run], device: torch.device) -> Packed:
    q_lens = torch.tensor([0] + [r.queries.numel() for r in runs])
    k_lens = torch.tensor([0] + [r.keys.numel() for r in runs])
    return Packed(
        torch.cat([r.queries for r in runs]).to(device),
        torch.cat([r.keys for r in runs]).to(device),
        q_lens.cumsum(0).to(torch.int32).to(device),
        k_lens.cumsum(0).to(torch.int32).to(device),
        int(q_lens.max()),
        int(k_lens.max()),
    )


def group_runs(runs: list[Run], device: torch.device, max_waste: float = 1.5) -> list[Group]:
    """Pack runs into padded groups, starting a new group when padding would exceed `max_waste`
    times the attention area the group's runs really need."""
    groups: list[list[Run]] = []
    for run in sorted(runs, key=lambda r: (r.keys.numel(), r.queries.numel())):
        if groups:
            cand = groups[-1] + [run]
            padded = len(cand) * max(r.queries.numel() for r in cand) * max(r.keys.numel() for r in cand)
            if padded <= max_waste * sum(r.queries.numel() * r.keys.numel() for r in cand):
                groups[-1] = cand
                continue
        groups.append([run])
    return [_pad(members, device) for members in groups]


def _pad(members: list[Run], device: torch.device) -> Group:
    n = len(members)
    lq, lk = max(r.queries.numel() for r in members), max(r.keys.numel() for r in members)
    query_index = torch.empty(n, lq, dtype=torch.long)
    key_index = torch.empty(n, lk, dtype=torch.long)
    mask = torch.zeros(n, 1, 1, lk, dtype=torch.bool)
    real = torch.zeros(n, lq, dtype=torch.bool)
    for i, run in enumerate(members):
        nq, nk = run.queries.numel(), run.keys.numel()
        query_index[i, :nq] = run.queries
        query_index[i, nq:] = run.queries[0]  # padded queries: computed, then dropped
        key_index[i, :nk] = run.keys
        key_index[i, nk:] = run.keys[0]
        mask[i, 0, 0, :nk] = True
        real[i, :nq] = True
    real_queries = torch.nonzero(real.reshape(-1)).squeeze(1)
    return Group(
        query_index.reshape(-1).to(device), key_index.reshape(-1).to(device), mask.to(device),
        real_queries.to(device), query_index.reshape(-1)[real_queries].to(device), (n, lq, lk),
    )


KERNEL_ENV = "MOLMO2_SHIM_PREFILL_KERNEL"
KERNEL_CHOICES = ("auto", "vllm-flash", "torch-varlen", "sdpa")


def fused_kernel_for(q: torch.Tensor, head_dim: int) -> VarlenKernel | None:
    """The fused variable-length kernel for this step's queries, or None for the padded SDPA
    path. MOLMO2_SHIM_PREFILL_KERNEL picks one (auto, vllm-flash, torch-varlen, sdpa); a named
    kernel that cannot run here is an error, not a silent fallback."""
    choice = os.environ.get(KERNEL_ENV, "auto")
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={choice!r}: expected one of {', '.join(KERNEL_CHOICES)}")
    if choice == "sdpa":
        return None
    usable = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and head_dim <= 256
    kernels = varlen_kernels() if usable else {}
    if choice == "auto":
        return next(iter(kernels.values()), None)
    if choice not in kernels:
        raise RuntimeError(
            f"{KERNEL_ENV}={choice}: that kernel is not available for {q.dtype} on {q.device} "
            f"(available here: {', '.join(kernels) or 'none'}); unset it to choose automatically"
        )
    return kernels[choice]


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
        self.runs: list[Run] = []
        self._device = torch.device("cpu")
        self._packed: Packed | None = None  # built on first use in the step, for all layers
        self._groups: list[Group] | None = None
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
        self.end_step()
        pending, self._pending = self._pending, None
        self._device = positions.device
        if pending is None:
            if self._profile_tokens is not None and positions.shape[0] >= self._profile_tokens:
                self._profile_tokens = None
                tokens = int(positions.shape[0])
                self._activate([Run(torch.arange(tokens), torch.arange(tokens))])
            return
        num = pending.shape[0]
        is_mm = pending.cpu()
        pos = positions[:num].cpu()
        runs: list[Run] = []
        for start, end in _request_spans(pos):
            local = is_mm[start:end]
            if not bool(local.any()):
                continue
            if int(pos[start]) != 0:
                self._warn_partial(int(pos[start]))
                continue
            runs.extend(request_runs(start, local))
        if runs:
            self._activate(runs)

    def _activate(self, runs: list[Run]) -> None:
        global _ACTIVE
        self.runs = runs
        _ACTIVE = self

    def end_step(self) -> None:
        global _ACTIVE
        self.runs, self._packed, self._groups = [], None, None
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
        kernel = fused_kernel_for(q, head_dim)
        if kernel is not None:
            if self._packed is None:
                self._packed = pack_runs(self.runs, self._device)
            p = self._packed
            o = kernel(
                q.index_select(0, p.query_rows).view(-1, num_heads, head_dim),
                k.index_select(0, p.key_rows).view(-1, num_kv_heads, head_dim),
                v.index_select(0, p.key_rows).view(-1, num_kv_heads, head_dim),
                p.cu_queries, p.cu_keys, p.max_queries, p.max_keys, scale,
            )
            out.index_copy_(0, p.query_rows, o.reshape(-1, num_heads * head_dim).to(out.dtype))
            return out
        if self._groups is None:
            self._groups = group_runs(self.runs, self._device)
        for g in self._groups:
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
    if plan is not None and plan.runs:
        plan.apply(q, k, v, out, num_heads, num_kv_heads, head_dim, scale)


@bidirectional_prefill.register_fake
def _(q, k, v, out, num_heads, num_kv_heads, head_dim, scale) -> None:  # noqa: ANN001
    return None
