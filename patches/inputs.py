"""Text-only prompts: the original's BOS, and no image special tokens typed as text.

The original processor prepends BOS (<|im_end|>) to every prompt. Prompts with images get it
from the shim's multimodal processor; text-only prompts never reach a multimodal processor,
so the wrappers here add it where vLLM turns text-only prompts into token ids: the input
preprocessor up to 0.21, the renderer from 0.22 (the catalog says which applies where).
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.engine.identifiers import is_shim_model_config


def add_text_only_bos(owner: Any, inputs: Any) -> Any:
    """`owner` is vLLM's input preprocessor (<= 0.21) or renderer (0.22): both carry the model
    config and the tokenizer."""
    if inputs.get("type") != "token":
        return inputs
    if not is_shim_model_config(owner.model_config):
        return inputs
    from molmo2_shim.processing.layout import SpecialTokenIds, insert_bos
    from molmo2_shim.processing.prompt import check_no_stray_tokens

    tokenizer = getattr(owner, "tokenizer", None)
    if tokenizer is None:  # skip_tokenizer_init: ids are the caller's business
        return inputs
    special = SpecialTokenIds.from_tokenizer(tokenizer)
    ids = list(inputs["prompt_token_ids"])
    check_no_stray_tokens(ids, special, "the text-only prompt")
    inputs["prompt_token_ids"] = insert_bos(ids, special.bos)
    return inputs


def text_only_bos(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return add_text_only_bos(instance, wrapped(*args, **kwargs))


async def text_only_bos_async(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return add_text_only_bos(instance, await wrapped(*args, **kwargs))
