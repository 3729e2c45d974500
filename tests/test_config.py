"""Config fields are honoured or refused, never defaulted silently.

The family's real text-backbone values (from the public config.json files and AllenAI's
training configs, see docs/design.md) read to what the original computes; configs written by
transformers >= 5.20's native Molmo2 read to the same values; RoPE scaling is translated into
vLLM's terms and checked against transformers' own RoPE computation (what the original calls);
values the shim cannot compute are refused with Molmo2ConfigError.
"""

from __future__ import annotations

import copy
import math

import pytest

from molmo2_shim.errors import Molmo2ConfigError
from molmo2_shim.processing.config import Molmo2Config, image_attention_is_bidirectional, unsupported_settings
from molmo2_shim.processing.rope import vllm_rope_scaling

QWEN3_TEXT = dict(additional_vocab_size=128, head_dim=128, hidden_act="silu", layer_norm_eps=1e-6, qkv_bias=False,
                  use_qk_norm=True, qk_norm_type="qwen3", norm_after=False, rope_scaling=None, rope_scaling_layers=None,
                  vocab_size=151936, max_position_embeddings=36864, num_attention_heads=32, num_key_value_heads=8,
                  num_hidden_layers=36)
O7B_YARN = {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.2079441541679836,
            "original_max_position_embeddings": 8192, "beta_fast": 32, "beta_slow": 1}
TEXT = {
    # allenai/Molmo2-4B (and Molmo2-VideoPoint-4B, MolmoWeb-4B: the same backbone)
    "Molmo2-4B": dict(QWEN3_TEXT, hidden_size=2560, intermediate_size=9728, rope_theta=5_000_000.0),
    # allenai/Molmo2-8B: Qwen3-8B, rope_theta 1e6
    "Molmo2-8B": dict(QWEN3_TEXT, hidden_size=4096, intermediate_size=12288, rope_theta=1_000_000.0),
    # allenai/Molmo2-O-7B: OLMo-3-7B, post-norm, whole-projection q/k norm, no GQA, YaRN on listed layers
    "Molmo2-O-7B": dict(additional_vocab_size=128, head_dim=128, hidden_act="silu", layer_norm_eps=1e-6, qkv_bias=False,
                        use_qk_norm=True, qk_norm_type="olmo", norm_after=True, hidden_size=4096, intermediate_size=11008,
                        num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32, vocab_size=100278,
                        max_position_embeddings=65536, rope_theta=500000.0, rope_scaling=O7B_YARN,
                        rope_scaling_layers=[3, 7, 11, 15, 19, 23, 27, 31]),
}


def config(text: dict, **top) -> Molmo2Config:
    return Molmo2Config(text_config=copy.deepcopy(text), **top)


@pytest.mark.parametrize("name", sorted(TEXT))
def test_family_configs_are_read_and_fully_supported(name):
    cfg = config(TEXT[name])
    for key, value in TEXT[name].items():
        assert getattr(cfg.text_config, key) == value, key
    assert unsupported_settings(cfg) == []
    assert image_attention_is_bidirectional(cfg)


def test_o7b_yarn_in_vllm_terms():
    # attention_factor equals vLLM's own 0.1*ln(8)+1, so no attn_factor correction is needed
    assert vllm_rope_scaling(O7B_YARN, 65536, False) == {
        "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8192, "beta_fast": 32, "beta_slow": 1}


def test_yarn_keys_vllm_reads_under_other_names():
    custom = dict(O7B_YARN, attention_factor=1.5)
    assert vllm_rope_scaling(custom, 65536, False)["attn_factor"] == pytest.approx(1.5 / (0.1 * math.log(8) + 1))
    ratio = dict(O7B_YARN, mscale=1.0, mscale_all_dim=0.5)
    del ratio["attention_factor"]
    expected = (0.1 * math.log(8) + 1) / (0.05 * math.log(8) + 1)
    assert vllm_rope_scaling(ratio, 65536, False)["attn_factor"] * (0.1 * math.log(8) + 1) == pytest.approx(expected)
    no_original = {k: v for k, v in O7B_YARN.items() if k != "original_max_position_embeddings"}
    assert vllm_rope_scaling(no_original, 4096, False)["original_max_position_embeddings"] == 4096
    assert vllm_rope_scaling(dict(O7B_YARN, truncate=False), 65536, True)["truncate"] is False


@pytest.mark.parametrize("scaling, message", [
    ({"rope_type": "dynamic", "factor": 2.0}, "'dynamic' is not supported"),
    ({"rope_type": "longrope", "long_factor": [1.0]}, "'longrope' is not supported"),
    (dict(O7B_YARN, truncate=False), "truncate=false"),
    (dict(O7B_YARN, smoothing=0.5), "does not know how to honour"),
])
def test_rope_settings_vllm_cannot_compute_are_refused(scaling, message):
    with pytest.raises(Molmo2ConfigError, match=message):
        vllm_rope_scaling(scaling, 65536, False)


@pytest.mark.parametrize("change, message", [
    ({"text": {"hidden_act": "gelu"}}, "text_config.hidden_act='gelu'"),
    ({"text": {"qk_norm_type": "gemma"}}, "qk_norm_type='gemma'"),
    ({"text": {"rope_scaling_layers": [40]}}, "layers \\[40\\]"),
    ({"text": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}}, "'dynamic'"),
    ({"top": {"tie_word_embeddings": True}}, "tie_word_embeddings=true"),
    ({"adapter": {"hidden_act": "gelu"}}, "adapter_config.hidden_act='gelu'"),
])
def test_settings_that_change_the_math_are_refused(change, message):
    import re

    text = dict(TEXT["Molmo2-4B"], **change.get("text", {}))
    cfg = Molmo2Config(text_config=text, adapter_config=change.get("adapter"), **change.get("top", {}))
    problems = unsupported_settings(cfg)
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_molmoweb_causal_switch():
    assert not image_attention_is_bidirectional(config(TEXT["Molmo2-4B"], is_mm_prefix_lm=False))
    assert image_attention_is_bidirectional(config(TEXT["Molmo2-4B"], is_mm_prefix_lm=True))


def native_format(name: str) -> dict:
    """The same model as transformers >= 5.20's native Molmo2 writes it (its key names)."""
    text = dict(TEXT[name])
    text["attention_bias"] = text.pop("qkv_bias")
    text["rms_norm_eps"] = text.pop("layer_norm_eps")
    text.pop("use_qk_norm")
    scaling = text.pop("rope_scaling")
    text["rope_parameters"] = {**(scaling or {"rope_type": "default"}), "rope_theta": text.pop("rope_theta")}
    if text["rope_scaling_layers"] is None:
        text["rope_scaling_layers"] = list(range(text["num_hidden_layers"]))
    return {
        "text_config": text,
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 25, "image_size": [378, 378], "patch_size": 14,
                          "num_position_embeddings": 729, "head_dim": 72, "num_attention_heads": 16,
                          "num_key_value_heads": 16, "intermediate_size": 4304},
        "adapter_config": {"vision_feature_layer": [24, 18], "hidden_size": 1152, "intermediate_size": 9728,
                           "text_hidden_size": text["hidden_size"]},
    }


@pytest.mark.parametrize("name", sorted(TEXT))
def test_transformers_native_configs_read_to_the_same_values(name):
    native = Molmo2Config(**native_format(name))
    original = config(TEXT[name], vit_config={"num_hidden_layers": 27}, adapter_config={"vit_layers": [-3, -9]})
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "rope_theta", "rope_scaling", "norm_after",
                "qk_norm_type", "use_qk_norm", "qkv_bias", "layer_norm_eps", "max_position_embeddings"):
        assert getattr(native.text_config, key) == getattr(original.text_config, key), key
    layers = original.text_config.rope_scaling_layers or range(original.text_config.num_hidden_layers)
    assert list(native.text_config.rope_scaling_layers) == list(layers)
    # The same ViT blocks are tapped: [24, 18] of a trimmed 25-layer tower = [-3, -9] of 27 layers.
    taps = lambda c: [i if i >= 0 else i + c.vit_config.num_hidden_layers for i in c.adapter_config.vit_layers]  # noqa: E731
    assert taps(native) == taps(original) == [24, 18]
    assert native.vit_config.image_default_input_size == [378, 378] and native.vit_config.image_num_pos == 729
    assert unsupported_settings(native) == []


@pytest.mark.engine
@pytest.mark.parametrize("scaling", [O7B_YARN, dict(O7B_YARN, attention_factor=1.5),
                                     {"rope_type": "linear", "factor": 2.0}], ids=["o7b", "custom_factor", "linear"])
def test_vllm_rotary_tables_equal_transformers(scaling):
    """vLLM's cos/sin for the translated keys equal transformers' (the original's) RoPE."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from molmo2_shim.engine.features import make_rope, yarn_accepts_truncate
    from molmo2_shim.processing.config import Molmo2TextConfig

    head_dim, theta, max_pos = 32, 500000.0, 65536
    text = Molmo2TextConfig(head_dim=head_dim, rope_theta=theta, rope_scaling=dict(scaling), max_position_embeddings=max_pos,
                            hidden_size=128, num_attention_heads=4)
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](text, "cpu")
    positions = torch.tensor([0, 1, 7, 100, 4000])
    freqs = positions[:, None].float() * inv_freq[None, :]
    from vllm.config import VllmConfig, set_current_vllm_config

    with set_current_vllm_config(VllmConfig()):  # vLLM >= 0.16 builds its layers only inside one
        rope = make_rope(head_dim, max_pos, theta, vllm_rope_scaling(text.rope_scaling, max_pos, yarn_accepts_truncate()))
    cos, sin = rope.cos_sin_cache[positions].float().chunk(2, dim=-1)
    torch.testing.assert_close(cos, freqs.cos() * attention_scaling, rtol=0, atol=2e-6)
    torch.testing.assert_close(sin, freqs.sin() * attention_scaling, rtol=0, atol=2e-6)
