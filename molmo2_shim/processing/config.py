"""Built-in Molmo2 configuration, so checkpoints load without trust_remote_code.

Field names and defaults follow the released checkpoints' config.json (Molmo2-4B values as
defaults), so a config written by the original code reads back unchanged and vice versa.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

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
        self.vit_config = _sub(Molmo2VisionConfig, vit_config)
        self.adapter_config = _sub(Molmo2AdapterConfig, adapter_config)
        self.text_config = _sub(Molmo2TextConfig, text_config)
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


def _sub(cls: type[PretrainedConfig], value: Any) -> PretrainedConfig:
    if value is None:
        return cls()
    if isinstance(value, PretrainedConfig):
        return value
    return cls(**value)


def text_config_of(config: Any) -> Any:
    """The text sub-config of our config class or of the hub's remote-code class."""
    return getattr(config, "text_config", None) or config.llm_config
