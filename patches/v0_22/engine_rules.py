"""Engine-side patches for the shim's Molmo2 on vLLM 0.22 (opt-in override of native).

1. Scheduler and vocabulary: the 0.11-0.14 wrappers apply unchanged (see
   patches/engine_rules.py for what they do and why).
2. BOS for text-only prompts: vLLM 0.22 renders prompts in `vllm.renderers.base.BaseRenderer`
   (`_process_tokens` and its async twin), no longer in the input preprocessor.
   Remove when: vLLM prepends the model's BOS to text-only prompts of multimodal models.
3. Undecodable images: 0.22's `ImageMediaIO` (now in vllm.multimodal.media.image) maps OSError
   to ValueError itself; decompression bombs still surface as a 500, so the wrapper stays.
vLLM 0.22 marks model_type molmo2 as a prefix-LM (bidirectional attention within runs of
embedding positions, Triton backend). That stays on: the shim's recomputation overwrites every
multimodal row with the original's whole-sequence mask afterwards, and where it cannot (a
region split across chunks) vLLM's partial bidirectionality is closer to the original than
causal attention. (Measured on an H200: switching it off to get FlashAttention 3 made decode
~9% slower than native, which runs on Triton.)
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.patching import Patch

from .. import engine_rules as base_rules


async def _text_only_bos_async(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    inputs = await wrapped(*args, **kwargs)
    return base_rules.add_text_only_bos(instance, inputs)


def _text_only_bos(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return base_rules.add_text_only_bos(instance, wrapped(*args, **kwargs))


def changes() -> list[Patch]:
    scheduling = [p for p in base_rules.changes() if p.module.startswith(("vllm.v1.core", "vllm.config"))]
    return [
        *scheduling,
        Patch("BOS for Molmo2 text-only prompts (renderer)", "vllm.renderers.base",
              "BaseRenderer._process_tokens", _text_only_bos),
        Patch("BOS for Molmo2 text-only prompts (async renderer)", "vllm.renderers.base",
              "BaseRenderer._process_tokens_async", _text_only_bos_async),
        Patch("decompression bombs are 4xx, not 500", "vllm.multimodal.media.image",
              "ImageMediaIO.load_bytes", base_rules._decode_errors_are_client_errors),
    ]
