"""Engine-side patches for the shim's Molmo2 (vLLM 0.11.0 - 0.11.2).

1. Scheduler: keep a Molmo2 request's multimodal region in one prefill step.
   What: wraps `KVCacheManager.get_computed_blocks` (drop prefix-cache hits that end inside a
   Molmo2 image region) and `Scheduler._try_schedule_encoder_inputs` (hold a waiting request
   back instead of splitting its region across chunks).
   Why: the original model attends bidirectionally among all image tokens at prefill; the
   shim recomputes those rows from the keys of the current step, which needs the region in
   one step from position 0 (rules in molmo2_shim/scheduling_rules.py).
   Versions: 0.11.0 - 0.11.2 (both methods keep their signatures; the 4th return value of
   _try_schedule_encoder_inputs in 0.11.1+ is passed through).
   Remove when: the shim runs on a vLLM whose attention backends take a multimodal prefix
   mask (0.15+ has `mm_prefix_range`, though per image only) and the model uses it.

2. Vocabulary size: `ModelConfig.get_vocab_size` reports base + additional vocabulary.
   Why: image special-token ids lie past the LM head. vLLM sizes penalty/logprob buffers by
   this number; with the head's size, prompt logprobs or repetition penalties on image
   prompts index out of range and kill the engine (seen on vLLM's native Molmo2).
   Versions: all 0.11.x. Remove when: never needed by a vLLM that sizes by the tokenizer.

3. BOS for text-only prompts: `InputPreprocessor._process_tokens/_process_text`.
   Why: the original processor prepends BOS (<|im_end|>) to every prompt; prompts with
   images get it from the shim's multimodal processor, text-only prompts never reach it.
   Also refuses image special tokens in text-only prompts (they would attend like image
   tokens). Versions: all 0.11.x. Remove when: vLLM routes text prompts of multimodal
   models through the model's processor.

4. Image decode failures are client errors: `ImageMediaIO.load_bytes/load_file`.
   Why: a truncated file or a decompression bomb sent to `vllm serve` raises OSError /
   DecompressionBombError in vLLM's media loader, which the OpenAI server answers with 500
   although the request is at fault; re-raised as ValueError they become a 400 with the
   message. The engine is unaffected either way. Versions: 0.11.0 - 0.14.x.
   Remove when: vLLM maps media decoding errors to 4xx itself.
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.patching import Patch
from molmo2_shim.scheduling_rules import keep_prefix_hit, must_wait, region_of


def _computed_blocks(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    blocks, num_hit = wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    if num_hit and not keep_prefix_hit(num_hit, region_of(request.mm_features)):
        empty = getattr(instance, "empty_kv_cache_blocks", None)
        return (empty if empty is not None else instance.create_empty_block_list()), 0
    return blocks, num_hit


def _schedule_encoder_inputs(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    names = ("request", "num_computed_tokens", "num_new_tokens", "encoder_compute_budget")
    bound = dict(zip(names, args), **kwargs)
    region = region_of(bound["request"].mm_features)
    max_tokens = instance.scheduler_config.max_num_batched_tokens
    max_encoder = min(instance.max_num_encoder_input_tokens, instance.encoder_cache_manager.cache_size)
    if must_wait(region, bound["num_computed_tokens"], result[1], max_tokens, max_encoder):
        return ([], 0, bound["encoder_compute_budget"], *([] for _ in result[3:]))
    return result


def _vocab_size(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> int:
    size = wrapped(*args, **kwargs)
    from molmo2_shim.registration import is_shim_model_config

    if is_shim_model_config(instance):
        size += int(getattr(instance.hf_text_config, "additional_vocab_size", 0) or 0)
    return size


def shim_serves_molmo2() -> bool:
    try:
        from vllm.model_executor.models import ModelRegistry

        entry = ModelRegistry.models.get("Molmo2ForConditionalGeneration")
    except Exception:
        return False
    return str(getattr(entry, "module_name", "")).startswith("molmo2_shim")


def add_text_only_bos(instance: Any, inputs: Any) -> Any:
    """`instance` is vLLM's input preprocessor (<= 0.21) or renderer (0.22): both carry the
    model config and the tokenizer."""
    if inputs.get("type") != "token":
        return inputs
    from molmo2_shim.registration import is_shim_model_config

    if not is_shim_model_config(instance.model_config):
        return inputs
    from molmo2_shim.processing.layout import SpecialTokenIds, insert_bos
    from molmo2_shim.processing.prompt import check_no_stray_tokens

    tokenizer = getattr(instance, "tokenizer", None)
    if tokenizer is None:  # skip_tokenizer_init: ids are the caller's business
        return inputs
    special = SpecialTokenIds.from_tokenizer(tokenizer)
    ids = list(inputs["prompt_token_ids"])
    check_no_stray_tokens(ids, special, "the text-only prompt")
    inputs["prompt_token_ids"] = insert_bos(ids, special.bos)
    return inputs


def _text_only_bos(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return add_text_only_bos(instance, wrapped(*args, **kwargs))


def _decode_errors_are_client_errors(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    from PIL import Image

    try:
        result = wrapped(*args, **kwargs)
        image = getattr(result, "media", result)  # 0.14 wraps the image with its bytes
        if isinstance(image, Image.Image):
            image.load()  # decode now (0.14 opens lazily), so a broken file fails here
        return result
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the image cannot be decoded: {exc}") from exc


def changes() -> list[Patch]:
    return [
        Patch("prefix-cache hits keep Molmo2 image regions whole", "vllm.v1.core.kv_cache_manager",
              "KVCacheManager.get_computed_blocks", _computed_blocks),
        Patch("prefill chunks keep Molmo2 image regions whole", "vllm.v1.core.sched.scheduler",
              "Scheduler._try_schedule_encoder_inputs", _schedule_encoder_inputs),
        Patch("vocabulary size covers Molmo2 image token ids", "vllm.config.model",
              "ModelConfig.get_vocab_size", _vocab_size),
        Patch("BOS for Molmo2 text-only token prompts", "vllm.inputs.preprocess",
              "InputPreprocessor._process_tokens", _text_only_bos),
        Patch("BOS for Molmo2 text-only text prompts", "vllm.inputs.preprocess",
              "InputPreprocessor._process_text", _text_only_bos),
        Patch("undecodable images are 4xx, not 500", "vllm.multimodal.image",
              "ImageMediaIO.load_bytes", _decode_errors_are_client_errors),
        Patch("undecodable image files are 4xx, not 500", "vllm.multimodal.image",
              "ImageMediaIO.load_file", _decode_errors_are_client_errors),
    ]
