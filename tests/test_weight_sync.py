"""verl's weight-sync contract, exercised the way verl does it on a real in-process engine.

verl builds vLLM with load_format="dummy" (random weights) and, every rollout step, streams
the trainer's state dict into `model.load_weights` through
`llm_engine.model_executor.driver_worker.worker.model_runner.model`, all at once (verl 0.6/0.7)
or in buckets (verl main).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch
from safetensors.torch import load_file

import golden
from engine_helpers import assert_matches_golden, full_logprob_params, golden_request, in_process_llm

pytestmark = [pytest.mark.engine, pytest.mark.model]

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800"]


@pytest.fixture(scope="module")
def dummy_llm():
    engine = in_process_llm(load_format="dummy")
    yield engine
    del engine


def vllm_model(llm):
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner.model


def checkpoint() -> dict[str, torch.Tensor]:
    return load_file(str(golden.CHECKPOINT / "model.safetensors"))


def hf_native_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under transformers' native Molmo2 names (>= 5.20), converted here
    independently of the shim by that library's documented conversion rules."""
    out: dict[str, torch.Tensor] = {}
    text = state["model.transformer.blocks.0.self_attn.q_norm.weight"].shape[0]
    heads, kv_heads = 4, 2
    for name, t in state.items():
        n = name
        if name == "model.transformer.wte.embedding":
            out["model.language_model.embed_tokens.weight"] = torch.cat([t, state["model.transformer.wte.new_embedding"]])
            continue
        if name == "model.transformer.wte.new_embedding":
            continue
        if name.endswith("self_attn.att_proj.weight"):
            base = name.replace("model.transformer.blocks", "model.language_model.layers").replace("att_proj.weight", "")
            q, k, v = t.split([heads * text, kv_heads * text, kv_heads * text])
            out[base + "q_proj.weight"], out[base + "k_proj.weight"], out[base + "v_proj.weight"] = q, k, v
            continue
        if name.endswith("mlp.ff_proj.weight"):
            base = name.replace("model.transformer.blocks", "model.language_model.layers").replace("ff_proj.weight", "")
            up, gate = t.chunk(2)
            out[base + "up_proj.weight"], out[base + "gate_proj.weight"] = up, gate
            continue
        for old, new in [
            ("model.transformer.blocks", "model.language_model.layers"), ("model.transformer.ln_f", "model.language_model.norm"),
            ("attn_norm", "input_layernorm"), ("ff_norm", "post_attention_layernorm"), ("attn_out", "o_proj"),
            ("mlp.ff_out", "mlp.down_proj"), ("model.vision_backbone.image_vit.transformer.resblocks", "model.vision_tower.layers"),
            ("model.vision_backbone.image_vit", "model.vision_tower"), ("attention.wq", "self_attn.q_proj"),
            ("attention.wk", "self_attn.k_proj"), ("attention.wv", "self_attn.v_proj"), ("attention.wo", "self_attn.o_proj"),
            ("attention_norm", "layer_norm1"), ("ffn_norm", "layer_norm2"), ("feed_forward.w1", "mlp.fc1"),
            ("feed_forward.w2", "mlp.fc2"), ("model.vision_backbone.image_pooling_2d", "model.multi_modal_projector.image_pooling_2d"),
            ("model.vision_backbone.image_projector", "model.multi_modal_projector.image_projector"),
        ]:
            n = n.replace(old, new)
        for old, new in [("image_pooling_2d.wq", "image_pooling_2d.q_proj"), ("image_pooling_2d.wk", "image_pooling_2d.k_proj"),
                         ("image_pooling_2d.wv", "image_pooling_2d.v_proj"), ("image_pooling_2d.wo", "image_pooling_2d.o_proj"),
                         ("image_projector.w1", "image_projector.gate_proj"), ("image_projector.w3", "image_projector.up_proj"),
                         ("image_projector.w2", "image_projector.down_proj")]:
            n = n.replace(old, new)
        out[n] = t
    return out


def buckets(state: dict[str, torch.Tensor], seed: int) -> list[list[tuple[str, torch.Tensor]]]:
    items = list(state.items())
    random.Random(seed).shuffle(items)
    cuts = sorted(random.Random(seed + 1).sample(range(1, len(items)), 6))
    return [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)])]


def streamed(items: list[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    yield from items  # a generator, as verl passes: load_weights must not need len() or a second pass


def generate_all(llm):
    return llm.generate([golden_request(n) for n in CASES], full_logprob_params())


def test_dummy_weights_do_not_match_before_sync(dummy_llm):
    out = dummy_llm.generate([golden_request("text_only")], full_logprob_params())[0]
    assert list(out.outputs[0].token_ids) != golden.model_case("text_only")["generate_bidir"].tolist()


@pytest.mark.parametrize("naming", ["original", "hf_native"])
def test_bucketed_sync_twice_matches_disk_loaded_engine(dummy_llm, naming):
    model = vllm_model(dummy_llm)
    assert model.model is not None and model.language_model is not None  # verl's MoE-patch check
    state = checkpoint() if naming == "original" else hf_native_names(checkpoint())
    params_before = {n: p.data_ptr() for n, p in model.named_parameters()}
    for step in range(2):  # verl syncs again every rollout step
        loaded: set[str] = set()
        for bucket in buckets(state, seed=step):
            loaded |= model.load_weights(streamed(bucket))
        assert loaded == set(params_before), "load_weights must report every parameter it wrote"
        dummy_llm.reset_prefix_cache()
        for name, out in zip(CASES, generate_all(dummy_llm)):
            assert_matches_golden(out, name)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == params_before, "parameters were rebound"


def test_unknown_names_are_ignored(dummy_llm):
    model = vllm_model(dummy_llm)
    extra = [("model.rotary_emb.inv_freq", torch.zeros(4)), ("something.else.weight", torch.zeros(2, 2))]
    assert model.load_weights(iter(extra)) == set()
