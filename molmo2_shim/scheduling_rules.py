"""When a Molmo2 request may be scheduled, so its image region is computed exactly.

The original attends bidirectionally among all multimodal tokens of a sequence at prefill
(see model/bidirectional.py). Recomputing those rows needs every key of the region, from
position 0 on, in one step. Two scheduler decisions can break that, and the per-version
scheduling patches consult these rules to prevent it:

* a prefix-cache hit that ends inside the region (or before it): the step would start past
  position 0. Such hits are dropped; a hit that covers the whole region is kept (its KV was
  computed exactly, for the same images: see the identifiers in multimodal.py);
* a prefill chunk that ends inside the region: the request waits for a step with room for the
  whole region instead, unless the region can never fit (larger than max_num_batched_tokens
  or the encoder budget), where vLLM's chunking is left alone and the model logs the deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .multimodal_ids import IDENTIFIER_PREFIX


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    encoder_tokens: int


def _encoder_cost(position: Any) -> int:
    """What vLLM's encoder budget counts for an item: placeholder tokens up to 0.12, embeddings
    from 0.13 (a cached property in 0.13/0.14, a method again in 0.22)."""
    import inspect

    from vllm.version import __version__ as version
    from packaging.version import Version

    if Version(Version(version).base_version) < Version("0.13"):
        return int(position.length)
    embeds = position.get_num_embeds
    return int(embeds() if inspect.ismethod(embeds) else embeds)


def region_of(features: Iterable[Any]) -> Region | None:
    """The span of a request's Molmo2 multimodal items, or None for other requests.

    (`in` rather than `startswith`: vLLM 0.14 prefixes identifiers with a LoRA name.)
    """
    ours = [f for f in features if IDENTIFIER_PREFIX in str(getattr(f, "identifier", ""))]
    if not ours:
        return None
    spans = [(f.mm_position.offset, f.mm_position.offset + f.mm_position.length) for f in ours]
    cost = sum(_encoder_cost(f.mm_position) for f in ours)
    return Region(min(s for s, _ in spans), max(e for _, e in spans), cost)


def keep_prefix_hit(num_hit_tokens: int, region: Region | None) -> bool:
    return region is None or num_hit_tokens == 0 or num_hit_tokens >= region.end


def must_wait(region: Region | None, num_computed: int, num_new: int, max_tokens: int, max_encoder_tokens: int) -> bool:
    """True when this step would split a region that fits into one step."""
    if region is None or num_computed != 0 or num_new >= region.end:
        return False
    return region.end <= max_tokens and region.encoder_tokens <= max_encoder_tokens
