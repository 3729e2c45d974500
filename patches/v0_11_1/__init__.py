"""Patch set for vLLM 0.11.1 and 0.11.2.

API generation: the runner calls `embed_multimodal(**kwargs)` and
`embed_input_ids(ids, multimodal_embeddings, is_multimodal=mask)`; `merge_by_field_config`
must be True to get flat fields concatenated (False logs a deprecation warning).
"""

from __future__ import annotations

from typing import Any

from molmo2_shim.registration import common_changes

from .. import engine_rules


def changes() -> list[Any]:
    return [*engine_rules.changes(), *common_changes()]


def model_class() -> type:
    from .model import Molmo2ForConditionalGeneration

    return Molmo2ForConditionalGeneration
