"""When a Molmo2 request may be scheduled, so its image region is computed exactly.

The original attends bidirectionally among all multimodal tokens of a sequence at prefill
(see molmo2_shim/model/bidirectional.py). Recomputing those rows needs every key of the
region, from position 0 on, in one step. Two scheduler decisions can break that; the
scheduler patches (molmo2_shim.patches.scheduling) consult these rules to prevent it:

* a prefix-cache hit that ends inside the region (or before it): the step would start past
  position 0. Such hits are dropped; a hit that covers the whole region is kept (its KV was
  computed exactly, for the same images: see engine/identifiers.py);
* a prefill chunk that ends inside the region: the request waits for a step with room for the
  whole region instead, unless the region can never fit (larger than a step's token budget or
  the encoder budget); then vLLM's chunking is left alone and the model logs the deviation.

Pure functions of plain numbers: no torch, no vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .identifiers import is_shim_identifier


@dataclass(frozen=True)
class Region:
    start: int
    end: int  # one past the last multimodal token
    encoder_tokens: int  # what vLLM's encoder budget counts for the region's items


def region_of(features: Iterable[Any], encoder_cost: Callable[[Any], int]) -> Region | None:
    """The span of a request's Molmo2 multimodal items, or None for other requests.

    `encoder_cost(mm_position)` is what this vLLM's encoder budget counts per item (placeholder
    tokens up to 0.12, embeddings from 0.13): the patch set passes the right one.
    """
    ours = [f for f in features if is_shim_identifier(getattr(f, "identifier", ""))]
    if not ours:
        return None
    spans = [(f.mm_position.offset, f.mm_position.offset + f.mm_position.length) for f in ours]
    cost = sum(encoder_cost(f.mm_position) for f in ours)
    return Region(min(s for s, _ in spans), max(e for _, e in spans), cost)


def keep_prefix_hit(num_hit_tokens: int, region: Region | None) -> bool:
    return region is None or num_hit_tokens == 0 or num_hit_tokens >= region.end


def region_fits(region: Region, max_tokens: int, max_encoder_tokens: int) -> bool:
    """Whether one step can hold the region from position 0 (else it can never be exact)."""
    return region.end <= max_tokens and region.encoder_tokens <= max_encoder_tokens


def must_wait(region: Region | None, num_computed: int, num_new: int, max_tokens: int, max_encoder_tokens: int) -> bool:
    """True when this step would split a region that fits into one step."""
    if region is None or num_computed != 0 or num_new >= region.end:
        return False
    return region_fits(region, max_tokens, max_encoder_tokens)
