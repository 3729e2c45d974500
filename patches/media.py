"""Undecodable images are the client's error: a 400 with the reason, not a 500.

A truncated file or a decompression bomb sent to `vllm serve` raises OSError /
DecompressionBombError in vLLM's image loader, which the OpenAI server answers with 500 although
the request is at fault; re-raised as ValueError they become a 400 with the message. The
engine is unaffected either way.
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.engine.features import loaded_image


def decode_errors_are_client_errors(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    from PIL import Image

    try:
        result = wrapped(*args, **kwargs)
        image = loaded_image(result)
        if isinstance(image, Image.Image):
            image.load()  # decode now (0.14 opens lazily), so a broken file fails here
        return result
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the image cannot be decoded: {exc}") from exc
