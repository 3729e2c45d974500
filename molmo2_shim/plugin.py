"""vLLM `general_plugins` entry point (name: molmo2_shim).

vLLM calls it in every process it starts: the API server, the engine core, each worker and
the child that inspects model classes. If VLLM_PLUGINS is set, it must list `molmo2_shim`.
"""

from __future__ import annotations

import logging

from .activation.installer import install
from .errors import UnsupportedVLLMVersionError

logger = logging.getLogger("molmo2_shim")


def register() -> None:
    try:
        install(automatic=True)
    except UnsupportedVLLMVersionError as exc:
        # A plugin must not take vLLM down for models that are not Molmo2; say it loudly.
        logger.error("%s", exc)
