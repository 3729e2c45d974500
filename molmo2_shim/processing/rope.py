"""The original's RoPE scaling (transformers' rope_scaling keys) in vLLM's terms, or a refusal.

The original computes its rotary tables with transformers' ROPE_INIT_FUNCTIONS; vLLM's
get_rope reads some of the same keys under other names and ignores others. Reading the config
naively would silently change the model (Molmo2-O-7B uses YaRN on some layers), so every key
is either translated to what vLLM computes identically or refused with Molmo2ConfigError.

YaRN, transformers (4.57 / 5.x) against vLLM:
* attention scale: transformers uses `attention_factor` if given, else 0.1*mscale*ln(factor)+1
  ratios when `mscale` and `mscale_all_dim` are given, else 0.1*ln(factor)+1; vLLM multiplies
  0.1*ln(factor)+1 by its own `attn_factor`. So attn_factor = wanted / (0.1*ln(factor)+1).
* `original_max_position_embeddings` defaults to max_position_embeddings in transformers and
  is required by vLLM; `beta_fast` / `beta_slow` default to 32 / 1 in both.
* `truncate` (default True, floor/ceil of the correction range): vLLM has the key from 0.12 on;
  on older vLLM, truncate=False is refused.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import Molmo2ConfigError

SUPPORTED = ("default", "linear", "llama3", "yarn")
YARN_KEYS = {"rope_type", "type", "factor", "attention_factor", "mscale", "mscale_all_dim",
             "original_max_position_embeddings", "beta_fast", "beta_slow", "truncate", "rope_theta"}


def _yarn_scale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def vllm_rope_scaling(scaling: dict[str, Any] | None, max_position_embeddings: int,
                      yarn_truncate_supported: bool) -> dict[str, Any] | None:
    """vLLM's rope_scaling / rope_parameters entries (without rope_theta) for the original's
    `rope_scaling`; None for plain RoPE."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in SUPPORTED:
        raise Molmo2ConfigError(
            f"rope_scaling type {kind!r} is not supported by molmo2-shim: its vLLM implementation would not compute "
            f"the original's rotary tables. Supported: {', '.join(SUPPORTED)}."
        )
    if kind == "default":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return {"rope_type": "llama3", **{k: scaling[k] for k in keys}}
    unknown = sorted(set(scaling) - YARN_KEYS)
    if unknown:
        raise Molmo2ConfigError(f"rope_scaling (yarn) has keys molmo2-shim does not know how to honour: {unknown}")
    factor = float(scaling["factor"])
    attention = scaling.get("attention_factor")
    if attention is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention = _yarn_scale(factor, float(mscale)) / _yarn_scale(factor, float(mscale_all_dim))
        else:
            attention = _yarn_scale(factor)
    out: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": int(scaling.get("original_max_position_embeddings") or max_position_embeddings),
        "beta_fast": scaling.get("beta_fast") or 32,
        "beta_slow": scaling.get("beta_slow") or 1,
    }
    if float(attention) != _yarn_scale(factor):
        out["attn_factor"] = float(attention) / _yarn_scale(factor)
    if not scaling.get("truncate", True):
        if not yarn_truncate_supported:
            raise Molmo2ConfigError(
                "rope_scaling has truncate=false, which this vLLM's YaRN cannot compute (vLLM reads it from 0.12 on)"
            )
        out["truncate"] = False
    return out
