"""Molmo2ForConditionalGeneration for vLLM 0.11.1 / 0.11.2: method names of that runner.

Why: 0.11.1 renamed the model hooks to `embed_multimodal` / `embed_input_ids` (the old names
only work through a deprecated fallback) and passes the placeholder mask explicitly.
Remove when: 0.11.1 and 0.11.2 leave the compat matrix.
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

    def embed_multimodal(self, **kwargs: Any) -> list[torch.Tensor]:
        return self.multimodal_features(**kwargs)

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: Any = None,
        *,
        is_multimodal: torch.Tensor | None = None,
        handle_oov_mm_token: bool = False,
    ) -> torch.Tensor:
        return self.embed_with_features(input_ids, multimodal_embeddings, is_multimodal)
