"""Engine settings and requests the shim cannot compute exactly: made exact, refused, or (with
MOLMO2_SHIM_ALLOW_INEXACT=1) logged and counted. The rules are molmo2_shim.engine.exactness;
these wrappers put them where vLLM builds an engine's config and where it turns a prompt into
a request (the user's or API server's process, which also serves /metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from molmo2_shim.engine.features import engine_core_request, num_embeds, placeholder_tokens, processor_cache
from molmo2_shim.engine.identifiers import is_shim_model_config
from molmo2_shim.engine.scheduling import region_of

logger = logging.getLogger("molmo2_shim")
Wrapper = Callable[[Any, Any, tuple, dict], Any]


def check_engine_config(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """EngineArgs.create_engine_config: check the finished VllmConfig before any engine starts."""
    vllm_config = wrapped(*args, **kwargs)
    if not is_shim_model_config(vllm_config.model_config):
        return vllm_config
    from molmo2_shim.engine.exactness import (
        check_engine,
        keep_the_prefix_lm_attention_backend,
        leave_image_attention_to_the_model,
        refuse_unsupported_config,
    )
    from molmo2_shim.engine.multimodal import region_bounds
    from molmo2_shim.processing.config import image_attention_is_bidirectional

    refuse_unsupported_config(vllm_config.model_config.hf_config)
    if leave_image_attention_to_the_model(vllm_config.model_config):
        try:
            backend = keep_the_prefix_lm_attention_backend(vllm_config)
        except Exception as exc:  # a speed choice only: never keep an engine from starting over it
            logger.warning("molmo2-shim: could not ask vLLM which attention backend native Molmo2 gets (%r); "
                           "vLLM chooses as for a causal model", exc)
            backend = None
        chosen = f"{backend}, the one vLLM picks for native Molmo2 (attention_backend chooses another)"
        logger.info("molmo2-shim: vLLM's per-image prefix-LM attention is off for Molmo2: the shim's model computes "
                    "the original's image attention itself; attention backend: %s", chosen if backend else "as configured")
    if not image_attention_is_bidirectional(vllm_config.model_config.hf_config):
        return vllm_config  # causal image attention (MolmoWeb): nothing to recompute, every setting is exact

    try:
        bounds = region_bounds(vllm_config)
    except Exception as exc:  # the checkpoint's processor files are unreadable: the engine itself will say so
        logger.warning("molmo2-shim: could not size Molmo2's image regions at engine start (%s); "
                       "requests are still checked one by one", exc)
        bounds = None
    for note in check_engine(vllm_config, bounds):
        logger.warning("molmo2-shim: %s", note)
    return vllm_config


def check_each_request(encoder_cost: Callable[[Any], int]) -> Wrapper:
    """Processor / InputProcessor.process_inputs: refuse a request whose image region cannot be
    computed exactly, or (opt-out) log it with its id and count it."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        config = instance.vllm_config
        if not is_shim_model_config(config.model_config):
            return result
        from molmo2_shim.engine.exactness import StepLimits, check_request, engine_reasons

        request = engine_core_request(result)
        features = request.mm_features or []
        try:
            check_request(request.request_id, region_of(features, encoder_cost),
                          StepLimits.of_scheduler_config(config.scheduler_config), engine_reasons(config))
        except Exception:
            from molmo2_shim.engine.multimodal import forget_sent_items

            keys = {k for f in features for k in (f.identifier, getattr(f, "mm_hash", None)) if k}
            forget_sent_items(processor_cache(instance), sorted(keys))
            raise
        return result

    return wrapper


check_requests_counting_tokens = check_each_request(placeholder_tokens)
check_requests_counting_embeddings = check_each_request(num_embeds)
