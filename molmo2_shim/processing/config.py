"""Built-in Molmo2 configuration, so checkpoints load without trust_remote_code.

Field names and defaults follow the released checkpoints' config.json (Molmo2-4B values as
defaults), so a config written by the original code reads back unchanged and vice versa.
Configs written by transformers >= 5.20's native Molmo2 (vision_config, rope_parameters,
attention_bias, ...) read to the same values. `unsupported_settings` lists the values the
shim's model cannot compute like the original (refused at engine start, never defaulted).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ..errors import Molmo2ConfigError
from .rope import vllm_rope_scaling

MODEL_TYPE = "molmo2"


class Molmo2VisionConfig(PretrainedConfig):
    model_type = "molmo2_vit"
    base_config_key = "vit_config"

    def __init__(
        self,
        hidden_size: int = 1152,
        intermediate_size: int = 4304,
        num_hidden_layers: int = 27,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 16,
        head_dim: int = 72,
        hidden_act: str = "gelu_pytorch_tanh",
        layer_norm_eps: float = 1e-6,
        image_default_input_size: tuple[int, int] = (378, 378),
        image_patch_size: int = 14,
        image_num_pos: int = 729,
        float32_attention: bool = True,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.image_default_input_size = list(image_default_input_size)
        self.image_patch_size = image_patch_size
        self.image_num_pos = image_num_pos
        self.float32_attention = float32_attention
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.initializer_range = initializer_range

    @property
    def image_num_patch(self) -> tuple[int, int]:
        h, w = self.image_default_input_size
        return h // self.image_patch_size, w // self.image_patch_size


class Molmo2AdapterConfig(PretrainedConfig):
    model_type = "molmo2_adapter"
    base_config_key = "adapter_config"

    def __init__(
        self,
        vit_layers: tuple[int, ...] = (-3, -9),
        hidden_size: int = 1152,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 16,
        head_dim: int = 72,
        intermediate_size: int = 9728,
        text_hidden_size: int = 2560,
        hidden_act: str = "silu",
        pooling_attention_mask: bool = True,
        float32_attention: bool = True,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        image_feature_dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vit_layers = list(vit_layers)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.text_hidden_size = text_hidden_size
        self.hidden_act = hidden_act
        self.pooling_attention_mask = pooling_attention_mask
        self.float32_attention = float32_attention
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.image_feature_dropout = image_feature_dropout
        self.initializer_range = initializer_range


class Molmo2TextConfig(PretrainedConfig):
    model_type = "molmo2_text"
    base_config_key = "text_config"

    def __init__(
        self,
        hidden_size: int = 2560,
        intermediate_size: int = 9728,
        num_hidden_layers: int = 36,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        head_dim: int = 128,
        vocab_size: int = 151936,
        additional_vocab_size: int = 128,
        max_position_embeddings: int = 36864,
        rope_theta: float = 5_000_000.0,
        rope_scaling: dict[str, Any] | None = None,
        rope_scaling_layers: list[int] | None = None,
        hidden_act: str = "silu",
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = False,
        use_qk_norm: bool = True,
        qk_norm_type: str = "qwen3",
        norm_after: bool = False,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.vocab_size = vocab_size
        self.additional_vocab_size = additional_vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.rope_scaling_layers = rope_scaling_layers
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.use_qk_norm = use_qk_norm
        self.qk_norm_type = qk_norm_type
        self.norm_after = norm_after
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.embedding_dropout = embedding_dropout
        self.initializer_range = initializer_range
        self.use_cache = use_cache


class Molmo2Config(PretrainedConfig):
    model_type = MODEL_TYPE
    sub_configs = {
        "vit_config": Molmo2VisionConfig,
        "adapter_config": Molmo2AdapterConfig,
        "text_config": Molmo2TextConfig,
    }

    def __init__(
        self,
        vit_config: dict[str, Any] | Molmo2VisionConfig | None = None,
        adapter_config: dict[str, Any] | Molmo2AdapterConfig | None = None,
        text_config: dict[str, Any] | Molmo2TextConfig | None = None,
        image_start_token_id: int | None = None,
        low_res_image_start_token_id: int | None = None,
        image_end_token_id: int | None = None,
        image_low_res_id: int | None = None,
        image_patch_id: int | None = None,
        image_high_res_id: int | None = None,
        image_col_id: int | None = None,
        frame_start_token_id: int | None = None,
        frame_end_token_id: int | None = None,
        use_frame_special_tokens: bool = True,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        if vit_config is None and "vision_config" in kwargs:  # transformers >= 5.20's key
            vit_config = kwargs.pop("vision_config")
        self.vit_config = _sub(Molmo2VisionConfig, _from_native(vit_config, NATIVE_VISION_KEYS))
        self.adapter_config = _sub(Molmo2AdapterConfig, _from_native(adapter_config, NATIVE_ADAPTER_KEYS))
        self.text_config = _sub(Molmo2TextConfig, _text_from_native(text_config))
        self.image_start_token_id = image_start_token_id
        self.low_res_image_start_token_id = low_res_image_start_token_id
        self.image_end_token_id = image_end_token_id
        self.image_low_res_id = image_low_res_id
        self.image_patch_id = image_patch_id
        self.image_high_res_id = image_high_res_id
        self.image_col_id = image_col_id
        self.frame_start_token_id = frame_start_token_id
        self.frame_end_token_id = frame_end_token_id
        self.use_frame_special_tokens = use_frame_special_tokens
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> Molmo2TextConfig:
        return self.text_config


# transformers >= 5.20's native Molmo2 config keys -> the original's (same values otherwise).
NATIVE_VISION_KEYS = {"image_size": "image_default_input_size", "patch_size": "image_patch_size",
                      "num_position_embeddings": "image_num_pos"}
NATIVE_ADAPTER_KEYS = {"vision_feature_layer": "vit_layers"}
NATIVE_TEXT_KEYS = {"attention_bias": "qkv_bias", "rms_norm_eps": "layer_norm_eps"}


def _from_native(value: Any, names: dict[str, str]) -> Any:
    if not isinstance(value, dict):
        return value
    return {names.get(k, k): v for k, v in value.items() if not (k in names and names[k] in value)}


def _text_from_native(value: Any) -> Any:
    """Native text configs keep rope_theta and the scaling in one `rope_parameters` dict, and
    always normalise q and k (no use_qk_norm field)."""
    if not isinstance(value, dict) or "rope_parameters" not in value:
        return _from_native(value, NATIVE_TEXT_KEYS)
    out = _from_native(value, NATIVE_TEXT_KEYS)
    params = dict(out.pop("rope_parameters") or {})
    if "rope_theta" not in out and "rope_theta" in params:
        out["rope_theta"] = params["rope_theta"]
    params.pop("rope_theta", None)
    if "rope_scaling" not in out:
        out["rope_scaling"] = params if params.get("rope_type", params.get("type", "default")) != "default" else None
    out.setdefault("use_qk_norm", True)
    return out


def _sub(cls: type[PretrainedConfig], value: Any) -> PretrainedConfig:
    if value is None:
        return cls()
    if isinstance(value, PretrainedConfig):
        return value
    return cls(**value)


def text_config_of(config: Any) -> Any:
    """The text sub-config of our config class or of the hub's remote-code class."""
    return getattr(config, "text_config", None) or config.llm_config


def image_attention_is_bidirectional(config: Any) -> bool:
    """Whether image tokens attend to each other both ways at prefill, as the original does when
    its processor passes token_type_ids. MolmoWeb is trained and run purely causally (its
    processor is called with return_mm_token_type_ids=False); no released config says so, so it
    is vLLM's own switch `is_mm_prefix_lm: false` (e.g. hf_overrides) that selects it."""
    value = getattr(config, "is_mm_prefix_lm", None)
    return True if value is None else bool(value)


QK_NORM_TYPES = ("qwen3", "olmo")


def unsupported_settings(config: Any, yarn_truncate_supported: bool = True) -> list[str]:
    """Config values the shim cannot compute like the original (empty when all are honoured).

    `yarn_truncate_supported`: whether the running vLLM's YaRN takes `truncate` (the caller
    probes vLLM; this module does not import it)."""
    text, vit, adapter = text_config_of(config), config.vit_config, config.adapter_config
    problems = []
    if getattr(text, "hidden_act", "silu") != "silu":
        problems.append(f"text_config.hidden_act={text.hidden_act!r} (the decoder MLP is SwiGLU with silu)")
    if getattr(adapter, "hidden_act", "silu") != "silu":
        problems.append(f"adapter_config.hidden_act={adapter.hidden_act!r} (the image projector is SwiGLU with silu)")
    if getattr(text, "use_qk_norm", False) and getattr(text, "qk_norm_type", None) not in QK_NORM_TYPES:
        problems.append(f"text_config.qk_norm_type={text.qk_norm_type!r} (supported: {', '.join(QK_NORM_TYPES)})")
    if getattr(config, "tie_word_embeddings", False):  # the top-level flag (sub-configs carry transformers' default)
        problems.append("tie_word_embeddings=true (Molmo2's output head is always a separate lm_head.weight; the "
                        "original's embedding is split in two tables and cannot be tied)")
    size = list(getattr(vit, "image_default_input_size", [378, 378]))
    if len(size) != 2 or size[0] != size[1]:
        problems.append(f"vit_config.image_default_input_size={size} (Molmo2 crops are square)")
    layers = int(getattr(text, "num_hidden_layers", 0))
    outside = [i for i in (getattr(text, "rope_scaling_layers", None) or []) if not 0 <= int(i) < layers]
    if outside:
        problems.append(f"text_config.rope_scaling_layers lists layers {outside} the model does not have ({layers})")
    try:
        vllm_rope_scaling(getattr(text, "rope_scaling", None), int(getattr(text, "max_position_embeddings", 0)),
                          yarn_truncate_supported)
    except Molmo2ConfigError as exc:
        problems.append(str(exc))
    return problems
