"""Weight syncs leave no stale encoder outputs.

vLLM keeps a multimodal item's encoder output (for Molmo2: the projected image features) after
its request ends, keyed by the item's identifier, and reuses it when the same image comes back.
verl syncs new weights into the engine and then calls `reset_prefix_cache()`; that drops the
KV cache but not the encoder outputs, so a repeated image would still get features computed
with the old weights. After a reset, every encoder output no running request uses is evicted
the way vLLM evicts under memory pressure (the scheduler forgets it and tells the model runner
to drop it in the next step), so the next request recomputes it with the current weights. The
processed pixels (vLLM's processor cache) do not depend on weights and stay cached.
"""

from __future__ import annotations

import logging
from typing import Any

from molmo2_shim.engine.identifiers import is_shim_model_config

logger = logging.getLogger("molmo2_shim")


def evict_unused_encoder_outputs(manager: Any) -> tuple[int, int]:
    """Evict every freeable entry of a scheduler's EncoderCacheManager (same fields in vLLM
    0.11-0.22: `freeable`, `cached`, `freed`, `num_free_slots`). Returns (evicted, still in use)."""
    evicted = 0
    while manager.freeable:
        identifier, slots = manager.freeable.popitem(last=False)
        del manager.cached[identifier]
        manager.freed.append(identifier)
        manager.num_free_slots += slots
        evicted += 1
    return evicted, len(manager.cached)


def forget_encoder_outputs_on_reset(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Scheduler.reset_prefix_cache: also drop the encoder outputs no running request uses."""
    result = wrapped(*args, **kwargs)
    if is_shim_model_config(instance.vllm_config.model_config):
        _, in_use = evict_unused_encoder_outputs(instance.encoder_cache_manager)
        if in_use:
            logger.warning(
                "molmo2-shim: reset_prefix_cache() ran while %d image(s) were in use by running requests; their "
                "encoder outputs stay cached and would be reused after a weight sync. Sync weights between rollouts, "
                "when no request runs.", in_use,
            )
    return result
