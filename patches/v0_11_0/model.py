"""Molmo2ForConditionalGeneration for vLLM 0.11.0: that runner's method names.

Why: 0.11.0 predates the embed_multimodal / embed_input_ids rename and passes no mask.
Remove when: 0.11.0 leaves the compat matrix (verl-agent and verl 0.6.1 still pin it).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor.models.interfaces import SupportsLoRA, SupportsMultiModal, SupportsPP
from vllm.multimodal import MULTIMODAL_REGISTRY

from molmo2_shim.engine.multimodal import Molmo2DummyInputsBuilder, Molmo2MultiModalProcessor, Molmo2ProcessingInfo
from molmo2_shim.model.base import Molmo2Base


@MULTIMODAL_REGISTRY.register_processor(
    Molmo2MultiModalProcessor, info=Molmo2ProcessingInfo, dummy_inputs=Molmo2DummyInputsBuilder
)
class Molmo2ForConditionalGeneration(Molmo2Base, SupportsMultiModal, SupportsPP, SupportsLoRA):
    merge_by_field_config = True

    def get_multimodal_embeddings(self, **kwargs: Any) -> list[torch.Tensor]:
        return self.multimodal_features(**kwargs)

    def get_input_embeddings(self, input_ids: torch.Tensor, multimodal_embeddings: Any = None) -> torch.Tensor:
        return self.embed_with_features(input_ids, multimodal_embeddings, None)
