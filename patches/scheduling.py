"""Scheduler wrappers that keep a Molmo2 request's multimodal region in one prefill step, and
the vocabulary size vLLM sizes its sampler buffers by.

The rules themselves are molmo2_shim.engine.scheduling; the catalog (catalog.py) says where
each wrapper goes, for which versions, and when it can go. No torch or vLLM import here:
these run in vLLM's engine-core process on every scheduling step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from molmo2_shim.engine.exactness import StepLimits
from molmo2_shim.engine.features import empty_blocks, num_embeds, placeholder_tokens
from molmo2_shim.engine.identifiers import is_shim_model_config
from molmo2_shim.engine.scheduling import keep_prefix_hit, must_wait, region_of

Wrapper = Callable[[Any, Any, tuple, dict], Any]


def _hit_cost(position: Any) -> int:
    return 0  # prefix-cache decisions only need the region's span


def drop_prefix_hits_inside_regions(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """KVCacheManager.get_computed_blocks: a hit that ends inside (or before) a Molmo2 region
    becomes no hit; one that covers the region is kept."""
    blocks, num_hit = wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    if num_hit and not keep_prefix_hit(num_hit, region_of(request.mm_features, _hit_cost)):
        return empty_blocks(instance), 0
    return blocks, num_hit


def hold_back_split_regions(encoder_cost: Callable[[Any], int]) -> Wrapper:
    """Scheduler._try_schedule_encoder_inputs: hold a waiting request back for a step rather
    than split its region across prefill chunks, when the region fits into a step at all
    (regions that never fit only reach the scheduler with MOLMO2_SHIM_ALLOW_INEXACT=1).

    `encoder_cost` is what this vLLM's encoder budget counts per item; the patch set picks it.
    """

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        names = ("request", "num_computed_tokens", "num_new_tokens", "encoder_compute_budget")
        bound = dict(zip(names, args), **kwargs)
        # vLLM asks on every step for every running request with images, decode steps included;
        # only a prefill from position 0 can split a region (must_wait), so the rest returns here.
        if bound["num_computed_tokens"] != 0:
            return result
        region = region_of(bound["request"].mm_features, encoder_cost)
        sc = instance.scheduler_config
        # long_prefill_token_threshold caps a request's tokens per step too: a region longer than it can never be
        # scheduled whole, so holding such a request back would wait forever (and block the queue behind it).
        step = StepLimits(int(sc.max_num_batched_tokens), int(getattr(sc, "long_prefill_token_threshold", 0) or 0),
                          min(instance.max_num_encoder_input_tokens, instance.encoder_cache_manager.cache_size))
        if must_wait(region, bound["num_computed_tokens"], result[1], step.tokens, step.encoder_budget):
            # The 4th value (0.11.1+: encoder inputs to load from an external cache) is empty too.
            return ([], 0, bound["encoder_compute_budget"], *([] for _ in result[3:]))
        return result

    return wrapper


hold_back_counting_tokens = hold_back_split_regions(placeholder_tokens)
hold_back_counting_embeddings = hold_back_split_regions(num_embeds)


def vocabulary_with_image_tokens(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> int:
    """ModelConfig.get_vocab_size: base + additional vocabulary for the shim's Molmo2."""
    size = wrapped(*args, **kwargs)
    if is_shim_model_config(instance):
        size += int(getattr(instance.hf_text_config, "additional_vocab_size", 0) or 0)
    return size
