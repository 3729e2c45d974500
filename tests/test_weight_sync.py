"""verl's weight-sync contract, exercised the way verl does it on real engines.

verl builds vLLM with load_format="dummy" (random weights) and, every rollout step, streams the
trainer's state dict into `model.load_weights`, all at once (verl 0.6/0.7) or in buckets (verl
main), through `llm_engine.model_executor.driver_worker.worker.model_runner.model` in-process,
or in the worker processes in server mode; then it calls `reset_prefix_cache()`. A sync must
leave nothing computed with the old weights: a repeated image after a sync must equal the
ORIGINAL model on the new weights (the remote code, run here), not reuse old vision features.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import original
import pytest
import torch

import golden
from engine_helpers import (
    assert_matches_golden,
    checkpoint_state,
    full_logprob_params,
    golden_request,
    logit_error,
    logits_difference,
)

pytestmark = [pytest.mark.engine, pytest.mark.model]

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800"]
IMAGE_CASE = "one_image_640x480"


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


def test_dummy_weights_do_not_match_before_sync(inprocess):
    out = inprocess.before_sync
    assert list(out.outputs[0].token_ids) != golden.model_case("text_only")["generate_bidir"].tolist()


@pytest.mark.parametrize("naming", ["original", "hf_native"])
def test_bucketed_sync_twice_matches_disk_loaded_engine(inprocess, naming):
    model, llm = inprocess.model, inprocess.llm
    assert model.model is not None and model.language_model is not None  # verl's MoE-patch check
    state = checkpoint_state() if naming == "original" else hf_native_names(checkpoint_state())
    params_before = {n: p.data_ptr() for n, p in model.named_parameters()}
    for step in range(2):  # verl syncs again every rollout step
        loaded: set[str] = set()
        for bucket in buckets(state, seed=step):
            loaded |= model.load_weights(streamed(bucket))
        assert loaded == set(params_before), "load_weights must report every parameter it wrote"
        llm.reset_prefix_cache()
        for name, out in zip(CASES, llm.generate([golden_request(n) for n in CASES], full_logprob_params())):
            assert_matches_golden(out, name)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == params_before, "parameters were rebound"


def test_unknown_names_are_ignored(inprocess):
    extra = [("model.rotary_emb.inv_freq", torch.zeros(4)), ("something.else.weight", torch.zeros(2, 2))]
    assert inprocess.model.load_weights(iter(extra)) == set()


# -- a sync must not leave old vision features behind ------------------------------------------

VISION_CHANGES = {  # a subset of tensors, as a partial sync (one of verl's buckets) sends it
    "model.vision_backbone.image_projector.w2.weight": 1.3,
    "model.vision_backbone.image_vit.transformer.resblocks.1.attention.wv.weight": 0.7,
    "model.vision_backbone.image_pooling_2d.wo.weight": 1.2,
}


def changed_vision_weights() -> dict[str, torch.Tensor]:
    state = checkpoint_state()
    return {name: state[name] * factor for name, factor in VISION_CHANGES.items()}


@pytest.fixture(scope="module")
def original_after_sync():
    """The original model's logits on the golden image case with the changed vision weights."""
    model = original.load_model(str(golden.CHECKPOINT))
    original.load_state_dict_into(model, changed_vision_weights())
    logits = original.forward_logits(model, original.golden_case_inputs(IMAGE_CASE))[0].numpy()
    assert logits_difference(logits, golden.model_case(IMAGE_CASE)["logits_bidir"]) > 1e-2, "the change must matter"
    return logits


def _load_changed_vision_weights(worker) -> int:
    """Runs where the weights live (the engine process): the changed tensors in two calls."""
    items = list(changed_vision_weights().items())
    model = worker.model_runner.model
    return len(model.load_weights(iter(items[:1])) | model.load_weights(iter(items[1:])))


def _load_checkpoint(worker) -> int:
    return len(worker.model_runner.model.load_weights(iter(checkpoint_state().items())))


@pytest.mark.row_subset
def test_repeated_image_after_sync_in_process(inprocess, original_after_sync):
    llm, request = inprocess.llm, golden_request(IMAGE_CASE)
    llm.generate([request], full_logprob_params(1, prompt=False))  # the image's features are now cached
    try:
        items = list(changed_vision_weights().items())
        inprocess.model.load_weights(iter(items[:1]))
        inprocess.model.load_weights(iter(items[1:]))
        llm.reset_prefix_cache()
        out = llm.generate([request], full_logprob_params())[0]
        assert logit_error(out, original_after_sync) < golden.ENGINE_LOGIT_TOLERANCE
    finally:
        inprocess.restore_checkpoint()
    assert_matches_golden(llm.generate([request], full_logprob_params())[0], IMAGE_CASE)


@pytest.mark.row_subset
def test_repeated_image_after_sync_in_the_engine_process(golden_llm, original_after_sync):
    """verl 0.7's server mode: the weights arrive in the engine's own process (collective_rpc)."""
    request = golden_request(IMAGE_CASE)
    golden_llm.generate([request], full_logprob_params(1, prompt=False))
    try:
        assert golden_llm.collective_rpc(_load_changed_vision_weights) == [len(VISION_CHANGES)]
        golden_llm.reset_prefix_cache()
        out = golden_llm.generate([request], full_logprob_params())[0]
        assert logit_error(out, original_after_sync) < golden.ENGINE_LOGIT_TOLERANCE
    finally:
        golden_llm.collective_rpc(_load_checkpoint)
        golden_llm.reset_prefix_cache()
    assert_matches_golden(golden_llm.generate([request], full_logprob_params())[0], IMAGE_CASE)
