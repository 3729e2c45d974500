"""Registry entries: the shim's model in vLLM's model registry, its built-in config in vLLM's
config registry, and its config and processor in transformers' Auto classes.

Each function receives the registry's module once it is imported and returns the undo. The
patch catalog (catalog.py) says which patch sets apply them and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from molmo2_shim.engine.identifiers import ARCHITECTURE, MODEL_REFERENCE

Undo = Callable[[], None]
_MISSING = object()


def _set_entry(mapping: Any, key: Any, value: Any) -> Undo:
    """`mapping[key] = value`, with an undo that restores what was there."""
    previous = dict.get(mapping, key, _MISSING) if isinstance(mapping, dict) else mapping.get(key, _MISSING)
    mapping[key] = value

    def undo() -> None:
        if previous is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = previous

    return undo


def register_model(registry_module: Any) -> Undo:
    """vllm.model_executor.models.registry: Molmo2ForConditionalGeneration -> the shim's class
    (a lazy "module:Class" reference, resolved by vLLM in whichever process needs it)."""
    models = registry_module.ModelRegistry.models
    previous = models.get(ARCHITECTURE)
    registry_module.ModelRegistry.register_model(ARCHITECTURE, MODEL_REFERENCE)

    def undo() -> None:
        if previous is None:
            models.pop(ARCHITECTURE, None)
        else:
            models[ARCHITECTURE] = previous

    return undo


# vLLM's config registry names attributes of vllm.transformers_utils.configs (0.11.0 accepts
# nothing else), so the class is published there under a shim-specific name.
CONFIG_ATTRIBUTE = "Molmo2ShimConfig"


def register_vllm_config(config_module: Any) -> Undo:
    """vllm.transformers_utils.config: model_type molmo2 -> the built-in config, consulted before
    transformers and before remote code."""
    return _set_entry(config_module._CONFIG_REGISTRY, "molmo2", CONFIG_ATTRIBUTE)


def publish_config_class(configs_module: Any) -> Undo:
    """vllm.transformers_utils.configs.Molmo2ShimConfig, which the registry entry names. Applied
    when vLLM imports that package (tens of ms of config classes), not before."""
    from molmo2_shim.processing.config import Molmo2Config

    setattr(configs_module, CONFIG_ATTRIBUTE, Molmo2Config)

    def undo() -> None:
        if getattr(configs_module, CONFIG_ATTRIBUTE, None) is Molmo2Config:
            delattr(configs_module, CONFIG_ATTRIBUTE)

    return undo


class _DeferredMolmo2Processor:
    """AutoProcessor's entry for Molmo2: the real class is imported on the first load, because
    importing it inside install() would take a quarter of install()'s time budget."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        from molmo2_shim.processing.processor import Molmo2Processor

        return Molmo2Processor.from_pretrained(*args, **kwargs)


# transformers also looks processors up by class name (processor_class in processor_config.json).
_DeferredMolmo2Processor.__name__ = _DeferredMolmo2Processor.__qualname__ = "Molmo2Processor"


def register_auto_classes(_: Any) -> Undo:
    """transformers' AutoConfig/AutoProcessor, so verl and users load Molmo2 without remote code."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from molmo2_shim.processing.config import Molmo2Config

    had_config = "molmo2" in CONFIG_MAPPING._extra_content
    if not had_config and "molmo2" not in CONFIG_MAPPING:
        AutoConfig.register("molmo2", Molmo2Config)
    had_processor = Molmo2Config in PROCESSOR_MAPPING._extra_content
    if not had_processor:
        AutoProcessor.register(Molmo2Config, _DeferredMolmo2Processor, exist_ok=True)

    def undo() -> None:
        if not had_config:
            CONFIG_MAPPING._extra_content.pop("molmo2", None)
        if not had_processor:
            PROCESSOR_MAPPING._extra_content.pop(Molmo2Config, None)

    return undo
