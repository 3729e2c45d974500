"""Marker on the multimodal item identifiers this model's processor hands to vLLM.

Kept in its own tiny module: the scheduler patches run in the engine process and must not
import the processor (torch, transformers) just to recognise a request.
"""

IDENTIFIER_PREFIX = "molmo2bidir-"
