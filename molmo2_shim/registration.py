"""Changes every patch set makes: the model in vLLM's registry, the built-in config/processor."""

from __future__ import annotations

from typing import Any

from .patching import Action, Undo, when_imported

ARCHITECTURE = "Molmo2ForConditionalGeneration"
# Lazy reference: vLLM imports it in a fresh child process to inspect the class. The module's
# leaf name must not match a file in vllm/model_executor/models/ (vLLM's model-info cache
# keys on that leaf name and would hash vLLM's own file instead of ours).
MODEL_REFERENCE = "molmo2_shim.registered_model:Molmo2ForConditionalGeneration"


def _register_model() -> Undo:
    return when_imported("vllm.model_executor.models.registry", _register_model_in)


def _register_model_in(registry_module: Any) -> Undo:
    ModelRegistry = registry_module.ModelRegistry
    models = ModelRegistry.models
    previous = models.get(ARCHITECTURE)
    ModelRegistry.register_model(ARCHITECTURE, MODEL_REFERENCE)

    def undo() -> None:
        if previous is None:
            models.pop(ARCHITECTURE, None)
        else:
            models[ARCHITECTURE] = previous

    return undo


_CONFIG_ATTRIBUTE = "Molmo2ShimConfig"


def _register_vllm_config() -> Undo:
    """vLLM's own config registry, consulted before transformers (and before remote code).

    Its entries name attributes of vllm.transformers_utils.configs (0.11.0 accepts nothing
    else), so the class is published there under a shim-specific name.
    """
    return when_imported("vllm.transformers_utils.config", _register_vllm_config_in)


def _register_vllm_config_in(vllm_config: Any) -> Undo:
    registry = vllm_config._CONFIG_REGISTRY
    previous = dict.get(registry, "molmo2")
    registry["molmo2"] = _CONFIG_ATTRIBUTE
    # The entry is resolved by importing vllm.transformers_utils.configs, which pulls in every
    # config class vLLM ships (tens of ms); publish ours when vLLM imports it, not before.
    undo_attribute = when_imported("vllm.transformers_utils.configs", _publish_config_class)

    def undo() -> None:
        undo_attribute()
        if previous is None:
            registry.pop("molmo2", None)
        else:
            registry["molmo2"] = previous

    return undo


def _publish_config_class(configs: Any) -> Undo:
    from .config import Molmo2Config

    setattr(configs, _CONFIG_ATTRIBUTE, Molmo2Config)

    def undo() -> None:
        if getattr(configs, _CONFIG_ATTRIBUTE, None) is Molmo2Config:
            delattr(configs, _CONFIG_ATTRIBUTE)

    return undo


def _register_auto_classes() -> Undo:
    """transformers' AutoConfig/AutoProcessor, so verl and users load Molmo2 without remote code."""
    return when_imported("transformers.models.auto.processing_auto", _register_auto_classes_in)


class _DeferredMolmo2Processor:
    """AutoProcessor's entry for Molmo2: the real class is imported on the first load, because
    importing it inside install() would take a quarter of install()'s time budget."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        from .processing.processor import Molmo2Processor

        return Molmo2Processor.from_pretrained(*args, **kwargs)


# transformers also looks processors up by class name (processor_class in processor_config.json).
_DeferredMolmo2Processor.__name__ = _DeferredMolmo2Processor.__qualname__ = "Molmo2Processor"


def _register_auto_classes_in(_: Any) -> Undo:
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from .config import Molmo2Config

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


def native_helper_changes() -> list[Any]:
    """What the shim still provides where vLLM has its own Molmo2: config and processor."""
    return [
        Action("vLLM config registry: molmo2 -> built-in Molmo2Config", _register_vllm_config),
        Action("transformers AutoConfig/AutoProcessor for molmo2", _register_auto_classes),
    ]


def common_changes() -> list[Any]:
    return [
        *native_helper_changes(),
        Action(f"vLLM ModelRegistry: {ARCHITECTURE} -> {MODEL_REFERENCE}", _register_model),
    ]


def is_shim_model_config(model_config: Any) -> bool:
    """Whether a vLLM ModelConfig is served by this shim's Molmo2 (not native vLLM's)."""
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
    module = getattr(entry, "module_name", None) or getattr(getattr(entry, "model_cls", None), "__module__", "")
    return str(module).startswith("molmo2_shim")  # the shim's model, not vLLM's native one
