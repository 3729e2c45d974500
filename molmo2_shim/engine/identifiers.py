"""How the engine recognises what is the shim's: its model in vLLM's registry, and the
multimodal items its processor hands to vLLM.

Imports neither torch nor vLLM: the scheduler wrappers run in vLLM's engine-core process and
consult these on every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

ARCHITECTURE = "Molmo2ForConditionalGeneration"
# Lazy reference: vLLM imports it in a fresh child process to inspect the class. The module's
# leaf name must not match a file in vllm/model_executor/models/ (vLLM's model-info cache
# keys on that leaf name and would hash vLLM's own file instead of ours).
MODEL_MODULE = "molmo2_shim.registered_model"
MODEL_REFERENCE = f"{MODEL_MODULE}:{ARCHITECTURE}"

# Every multimodal item identifier the shim's processor creates starts with this marker (vLLM
# 0.14 puts a LoRA name in front of it, so look for it with `in`).
IDENTIFIER_PREFIX = "molmo2bidir-"


def is_shim_identifier(identifier: object) -> bool:
    return IDENTIFIER_PREFIX in str(identifier)


def registered_module(registry_entry: Any) -> str | None:
    """The module behind a ModelRegistry entry (lazy entries name it; loaded ones hold the class)."""
    module = getattr(registry_entry, "module_name", None)
    if module is None:
        module = getattr(getattr(registry_entry, "model_cls", None), "__module__", None)
    return module


def is_shim_model_config(model_config: Any) -> bool:
    """Whether a vLLM ModelConfig is served by this shim's Molmo2 (not vLLM's native one)."""
    hf = getattr(model_config, "hf_config", None)
    if getattr(hf, "model_type", None) != "molmo2":
        return False
    archs = getattr(model_config, "architectures", None) or getattr(hf, "architectures", None) or []
    if ARCHITECTURE not in archs:
        return False
    try:
        from vllm.model_executor.models import ModelRegistry

        entry = ModelRegistry.models.get(ARCHITECTURE)
    except Exception:
        return False
    return registered_module(entry) == MODEL_MODULE


def joint_identifiers(base: Mapping[str, Sequence[str]], salt: bytes) -> dict[str, list[str]]:
    """Give each item an identifier that also covers every other item of the prompt.

    Image tokens attend to later images at prefill, so their KV cache depends on the whole
    multimodal region. vLLM keys prefix-cache blocks by the identifiers of the items they
    overlap: with per-prompt identifiers a cached block is reused only by a prompt with the
    same images in the same region layout (`salt`, see region_digest).
    """
    everything = hashlib.sha256(salt)
    for modality in sorted(base):
        for h in base[modality]:
            everything.update(f"{modality}:{h};".encode())
    joint = everything.hexdigest()
    return {
        modality: [
            IDENTIFIER_PREFIX + hashlib.sha256(f"{joint}|{modality}|{i}|{h}".encode()).hexdigest()
            for i, h in enumerate(hashes)
        ]
        for modality, hashes in base.items()
    }


def region_digest(ids: Sequence[int], placeholders: Sequence[int]) -> bytes:
    """The prompt from BOS through its last placeholder: what the image region's KV depends on."""
    marks = [i for i, t in enumerate(ids) if t in placeholders]
    if not marks:
        return b""
    return hashlib.sha256(repr(list(ids[: marks[-1] + 1])).encode()).digest()
