"""LoRA adapters in PEFT's format on the shim's Molmo2, against PEFT applied to the original.

The adapters and goldens are tests/fixtures/lora (made with PEFT by tools/make_lora_fixtures.py):
`original-names` trained on the original remote-code model (fused att_proj / ff_proj),
`native-names` on transformers' native Molmo2 (split q/k/v and gate/up, which the shim merges
into one exact LoRA on its fused layers), `vision-target` with vision-tower targets vLLM cannot
apply (refused). The engine is the shared in-process one (LoRA on, weights synced as verl does).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

import pytest
import torch
from lora_helpers import adapter, assert_matches_peft, lora_golden, lora_request
from safetensors.torch import load_file

import golden
from engine_helpers import checkpoint_state, full_logprob_params, golden_request, logits_difference, position_logprobs

pytestmark = [pytest.mark.engine, pytest.mark.lora]

CASES = ["text_only", "one_image_640x480", "two_images_300x200_500x800"]


def test_fixtures_are_real_peft_adapters_that_move_the_output():
    """Guards the goldens themselves: PEFT's format, and an adapter far from the base model."""
    for name in ("original-names", "native-names", "vision-target"):
        config = json.loads((adapter(name) / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] in (4, 8)
        assert all(k.startswith("base_model.model.") for k in load_file(str(adapter(name) / "adapter_model.safetensors")))
    base = golden.model_case("one_image_640x480")
    z = lora_golden("original-names", "one_image_640x480")
    assert logits_difference(base["logits_bidir"][z["positions"]], z["logits"]) > 1.0


@pytest.mark.parametrize("name", ["original-names", "native-names"])
def test_adapter_equals_peft_on_the_original(inprocess, name):
    """Every golden case with the adapter, in one batch: the logits PEFT gave (every text position,
    image positions sampled, the last) and the greedy continuation."""
    request = lora_request(name, 1 if name == "original-names" else 2)
    outputs = inprocess.llm.generate([golden_request(c) for c in CASES], full_logprob_params(), lora_request=request)
    for case, out in zip(CASES, outputs):
        assert_matches_peft(out, name, case)


def merged_checkpoint(name: str) -> dict[str, torch.Tensor]:
    """The checkpoint with an original-names adapter merged in: W + (alpha / r) * B @ A on each
    targeted linear (PEFT's merge, written out here from its definition)."""
    config = json.loads((adapter(name) / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter(name) / "adapter_model.safetensors"))
    state = checkpoint_state()
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            state[target] = state[target] + scale * (b.double() @ a.double()).to(state[target].dtype)
    return state


def test_adapter_equals_the_checkpoint_with_the_adapter_merged(inprocess):
    """verl's other LoRA route: merge the adapter into the weights and sync those. The engine
    with the adapter and the engine synced to the merged weights give the same log-probs."""
    request = lora_request("original-names", 1)
    prompts = [golden_request(c) for c in CASES]
    with_adapter = inprocess.llm.generate(prompts, full_logprob_params(), lora_request=request)
    inprocess.model.load_weights(iter(merged_checkpoint("original-names").items()))
    inprocess.llm.reset_prefix_cache()
    try:
        merged = inprocess.llm.generate(prompts, full_logprob_params())
    finally:
        inprocess.restore_checkpoint()
    for case, a, m in zip(CASES, with_adapter, merged):
        error = logits_difference(position_logprobs(a), position_logprobs(m))
        assert error <= golden.ENGINE_LOGIT_TOLERANCE, f"{case}: adapter vs merged weights differ by {error:.2e}"
        assert list(a.outputs[0].token_ids) == list(m.outputs[0].token_ids)


def test_two_adapters_in_one_batch_do_not_mix_and_the_base_model_is_untouched(inprocess):
    """A rollout batch with two adapters: each request gets its own; a base request afterwards
    gets the base model. (Base and adapter requests in ONE batch are not checked on the CPU:
    vLLM's CPU LoRA ops index the no-adapter sentinel -1 as the last adapter slot, for every
    model, vllm-project/vllm#48421; the GPU kernels skip it.)"""
    case = "one_image_640x480"
    loras = [lora_request("original-names", 1), lora_request("native-names", 2)]
    with_original, with_native = inprocess.llm.generate([golden_request(case)] * 2, full_logprob_params(), lora_request=loras)
    assert_matches_peft(with_original, "original-names", case)
    assert_matches_peft(with_native, "native-names", case)
    base = inprocess.llm.generate([golden_request(case)], full_logprob_params())[0]
    z = golden.model_case(case)
    assert logits_difference(position_logprobs(base), z["logits_bidir"]) <= golden.ENGINE_LOGIT_TOLERANCE
    assert list(base.outputs[0].token_ids) == z["generate_bidir"].tolist()


def test_vision_adapter_is_refused_with_a_clear_error_and_the_engine_keeps_serving(inprocess):
    from vllm.lora.request import LoRARequest

    with pytest.raises(Exception, match="trains vision modules.*MOLMO2_SHIM_ALLOW_INEXACT") as err:
        inprocess.llm.llm_engine.add_lora(LoRARequest("vision-target", 7, str(adapter("vision-target"))))
    assert "vision_backbone" in str(err.value)
    out = inprocess.llm.generate([golden_request("text_only")], full_logprob_params(),
                                 lora_request=lora_request("original-names", 1))[0]
    assert_matches_peft(out, "original-names", "text_only")


def test_vision_adapter_opt_out_serves_its_language_part(inprocess, monkeypatch, caplog):
    """MOLMO2_SHIM_ALLOW_INEXACT=1: loaded without the vision deltas, with a warning that says
    so; the text positions then follow PEFT's adapter closely (the vision deltas barely reach the
    tiny model's text logits), and differ from the base model."""
    from vllm.lora.request import LoRARequest

    monkeypatch.setenv("MOLMO2_SHIM_ALLOW_INEXACT", "1")
    request = LoRARequest("vision-target-allowed", 8, str(adapter("vision-target")))
    with caplog.at_level(logging.WARNING, logger="molmo2_shim"):
        assert inprocess.llm.llm_engine.add_lora(request)
    assert "WITHOUT its" in caplog.text and "vision_backbone" in caplog.text, caplog.text
    out = inprocess.llm.generate([golden_request("text_only")], full_logprob_params(), lora_request=request)[0]
    base = golden.model_case("text_only")
    assert logits_difference(position_logprobs(out), base["logits_bidir"]) > 0.1
    inprocess.llm.llm_engine.remove_lora(8)


def test_native_adapter_above_max_lora_rank_is_refused_with_the_rank_to_set(inprocess):
    """The native adapter's q/k/v merge into rank 3r = 12 on the fused layer: with an engine
    built for rank 8 (as verl rounds a rank-4 adapter up to) loading it must fail with the setting
    to change, not inside vLLM's buffers. The engine here has max_lora_rank=16, so its mapper
    (which carries the engine's limit to the adapter loader) is set to 8 for this request."""
    from vllm.lora.request import LoRARequest

    mapper = inprocess.model.hf_to_vllm_mapper
    limit, mapper.max_lora_rank = mapper.max_lora_rank, 8
    try:
        with pytest.raises(Exception, match=r"max_lora_rank=8.*max_lora_rank >= 12"):
            inprocess.llm.llm_engine.add_lora(LoRARequest("native-rank-8", 6, str(adapter("native-names"))))
    finally:
        mapper.max_lora_rank = limit
    assert limit == 16
    out = inprocess.llm.generate([golden_request("text_only")], full_logprob_params(), lora_request=lora_request("native-names", 2))[0]
    assert_matches_peft(out, "native-names", "text_only")


def test_adapter_from_tensors_as_verl_syncs_it(inprocess):
    """verl's LoRA rollouts hand the adapter to the worker as tensors plus the PEFT config
    (TensorLoRARequest; verl swaps the worker LoRA manager's `_load_adapter` for one that calls
    `from_lora_tensors` with the model's `hf_to_vllm_mapper`). The same here, with the native
    adapter's tensors as verl's FSDP side names them: the result equals PEFT."""
    from vllm.lora.peft_helper import PEFTHelper
    from vllm.lora.request import LoRARequest

    try:
        from vllm.lora.lora_model import LoRAModel
    except ImportError:  # vLLM < 0.13
        from vllm.lora.models import LoRAModel

    tensors = load_file(str(adapter("native-names") / "adapter_model.safetensors"))
    config = json.loads((adapter("native-names") / "adapter_config.json").read_text())
    runner = inprocess.llm.llm_engine.model_executor.driver_worker.worker.model_runner
    manager = runner.lora_manager

    # verl passes the embedding arguments of the vLLM it runs on (they changed in 0.12).
    if "embedding_modules" in inspect.signature(LoRAModel.from_lora_tensors).parameters:
        version_kwargs = dict(embedding_modules=manager.embedding_modules,
                              embedding_padding_modules=manager.embedding_padding_modules)
    else:
        version_kwargs = dict(model_vocab_size=manager.vocab_size)

    def load_from_tensors(request: Any) -> Any:
        helper = PEFTHelper.from_dict(config)
        helper.validate_legal(manager.lora_config)
        return LoRAModel.from_lora_tensors(
            lora_model_id=request.lora_int_id, tensors=dict(tensors), peft_helper=helper, device="cpu",
            dtype=manager.lora_config.lora_dtype, weights_mapper=getattr(runner.model, "hf_to_vllm_mapper", None),
            **version_kwargs)

    manager._load_adapter = load_from_tensors
    try:
        request = LoRARequest("from-tensors", 5, "unused-path")
        outputs = inprocess.llm.generate([golden_request(c) for c in CASES[1:]], full_logprob_params(), lora_request=request)
    finally:
        del manager._load_adapter
        inprocess.llm.llm_engine.remove_lora(5)
    for case, out in zip(CASES[1:], outputs):
        assert_matches_peft(out, "native-names", case)
