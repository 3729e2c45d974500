"""The few vLLM layer APIs whose signatures moved between 0.11 and 0.22, behind one call each.

Chosen by inspecting the installed vLLM rather than by version number, so a patch release
that backports a signature keeps working.
"""

from __future__ import annotations

import inspect
from typing import Any

from vllm.model_executor.layers.rotary_embedding import get_rope

try:  # 0.16+ moved the decoder attention layer out of vllm.attention
    from vllm.model_executor.layers.attention import Attention
except ImportError:
    from vllm.attention.layer import Attention  # type: ignore[no-redef]


def make_rope(head_dim: int, max_position: int, theta: float, scaling: dict[str, Any] | None) -> Any:
    params = inspect.signature(get_rope).parameters
    if "rope_parameters" in params:  # 0.12+
        rope = {"rope_type": "default", **(scaling or {}), "rope_theta": theta}
        if "type" in rope and "rope_type" not in (scaling or {}):
            rope["rope_type"] = rope.pop("type")
        kwargs: dict[str, Any] = {"max_position": max_position, "is_neox_style": True, "rope_parameters": rope}
        if "rotary_dim" in params:
            kwargs["rotary_dim"] = head_dim
        return get_rope(head_dim, **kwargs)
    return get_rope(
        head_dim, rotary_dim=head_dim, max_position=max_position, base=theta,
        is_neox_style=True, rope_scaling=scaling,
    )
