"""Molmo2ForConditionalGeneration for vLLM 0.13 / 0.14: the 0.11.1 adapter without
`merge_by_field_config` (0.13 warns that True is redundant; the attribute left the protocol).

Remove when: 0.13 and 0.14 leave the compat matrix.
"""

from __future__ import annotations

from ..v0_11_1.model import Molmo2ForConditionalGeneration as _Molmo2_0_11_1


class Molmo2ForConditionalGeneration(_Molmo2_0_11_1):
    merge_by_field_config = None  # type: ignore[assignment]
