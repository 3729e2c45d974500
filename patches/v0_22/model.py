"""Molmo2ForConditionalGeneration for vLLM 0.22 (opt-in override of the native model).

Why: 0.22 hands the multimodal processor one ProcessorInputs object and derives the item
hashes from it, and its runner passes the placeholder mask on the CPU; everything else is
the shared model (molmo2_shim.model) and processor (molmo2_shim.engine.multimodal).
Remove when: 0.22 leaves the compat matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from vllm.model_executor.models.interfaces import SupportsLoRA, SupportsMultiModal, SupportsPP
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.parse import MultiModalDataParser
from vllm.multimodal.processing import BaseMultiModalProcessor, ProcessorInputs

from molmo2_shim.engine.identifiers import joint_identifiers
from molmo2_shim.engine.multimodal import Molmo2DummyInputsBuilder, Molmo2MultiModalProcessor, Molmo2ProcessingInfo
from molmo2_shim.model.base import Molmo2Base


@dataclass
class Molmo2ProcessorInputs(ProcessorInputs):
    """ProcessorInputs whose item hashes cover the whole image region (see joint_identifiers)."""

    region_salt: bytes = b""
    profiling: bool = False
    joint: bool = True  # False for causal image attention (MolmoWeb): per-item hashes are right then

    def get_mm_hashes(self, model_id: str) -> Any:
        base = super().get_mm_hashes(model_id)
        return joint_identifiers(base, self.region_salt) if self.joint else base


class Molmo2ProcessingInfo022(Molmo2ProcessingInfo):
    def get_data_parser(self) -> MultiModalDataParser:
        parser = super().get_data_parser()
        parser.video_needs_metadata = True  # frame timestamps come from the metadata
        return parser


class Molmo2DummyInputsBuilder022(Molmo2DummyInputsBuilder):
    def get_dummy_processor_inputs(self, *args: Any, **kwargs: Any) -> ProcessorInputs:
        # 0.22 profiles every modality in one prompt too; mark the inputs so the processor
        # lets the image+video mix through for profiling only (see ProfilingData).
        base = super().get_dummy_processor_inputs(*args, **kwargs)
        return Molmo2ProcessorInputs(**{f.name: getattr(base, f.name) for f in fields(base)}, profiling=True)


class Molmo2MultiModalProcessor022(Molmo2MultiModalProcessor):
    def apply(self, inputs: ProcessorInputs, timing_ctx: Any) -> Any:  # type: ignore[override]
        norm, salt = self.normalize(
            inputs.prompt, inputs.mm_data_items.get_all_counts(), profiling=getattr(inputs, "profiling", False)
        )
        ours = Molmo2ProcessorInputs(
            prompt=norm.ids,
            mm_data_items=inputs.mm_data_items,
            mm_uuid_items=inputs.mm_uuid_items,
            hf_processor_mm_kwargs=inputs.hf_processor_mm_kwargs,
            tokenization_kwargs=inputs.tokenization_kwargs,
            region_salt=salt,
            joint=self.bidirectional,
        )
        out = BaseMultiModalProcessor.apply(self, ours, timing_ctx)  # the shared class's apply is pre-0.22's
        self.check_expanded(norm, out)
        return out


@MULTIMODAL_REGISTRY.register_processor(
    Molmo2MultiModalProcessor022, info=Molmo2ProcessingInfo022, dummy_inputs=Molmo2DummyInputsBuilder022
)
class Molmo2ForConditionalGeneration(Molmo2Base, SupportsMultiModal, SupportsPP, SupportsLoRA):
    def embed_multimodal(self, **kwargs: Any) -> list[torch.Tensor]:
        return self.multimodal_features(**kwargs)

    def embed_input_ids(
        self, input_ids: torch.Tensor, multimodal_embeddings: Any = None, *, is_multimodal: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        return self.embed_with_features(input_ids, multimodal_embeddings, is_multimodal)
