"""The catalog: every place molmo2-shim touches vLLM (and transformers), in one list.

Each entry names its target (`module:Qualified.name`), the patch sets that use it (the compat
matrix maps vLLM versions to patch sets), why it exists, the upstream change that would make
it unnecessary, and when it can go. Kinds:

* `wrap`      a wrapt wrapper around a vLLM function, applied by install() (reversibly);
* `registry`  an entry in a registry, applied by install() (reversibly);
* `override`  a method the shim's own classes override on a vLLM base class (in place while
              vLLM uses those classes; nothing to undo);
* `attribute` a class attribute vLLM reads from the shim's model class;
* `internal`  a vLLM internal (no public API for it) the shim reads or changes; listed so a
              vLLM upgrade that moves it is caught by the catalog test, not by users.

install() applies the `wrap` and `registry` entries of the row's patch set. The other two are
how the shim's classes plug into vLLM; they are listed so that every contact point with vLLM
is in one place, and tests/test_catalog.py resolves every target on every vLLM version whose
patch set names it. `molmo2-shim doctor` prints the entries active for the running vLLM, and
patches/README.md is generated from this file (`python tools/patch_catalog.py --write`).

Nothing here imports torch or vLLM: targets are strings, and the wrappers import lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import caches, exactness, inputs, lora, media, registries, scheduling

WRAP, REGISTRY, OVERRIDE, ATTRIBUTE, INTERNAL = "wrap", "registry", "override", "attribute", "internal"
APPLIED_KINDS = (WRAP, REGISTRY)

# Patch sets. "native" is what the shim still provides where vLLM has its own Molmo2 and the
# shim stands down (its config and processor spare trust_remote_code).
NATIVE = "native"
V0_11_0, V0_11_1, V0_12, V0_13, V0_22 = "v0_11_0", "v0_11_1", "v0_12", "v0_13", "v0_22"
SHIM_MODEL_SETS = (V0_11_0, V0_11_1, V0_12, V0_13, V0_22)
UP_TO_0_14 = (V0_11_0, V0_11_1, V0_12, V0_13)
EVERY_SET = (NATIVE, *SHIM_MODEL_SETS)


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    target: str  # "module:Qualified.name", or a module alone (a registry entry names the registry)
    patch_sets: tuple[str, ...]
    why: str
    upstream: str  # the vLLM change that would make the entry unnecessary
    remove_when: str
    apply: Callable[..., Any] | None = None  # wrap: a wrapt wrapper; registry: module -> undo

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]


@dataclass(frozen=True)
class PatchSet:
    name: str
    api: str  # the vLLM API generation it adapts to
    model: str | None  # "module:Class" of its Molmo2ForConditionalGeneration, if it serves one

    @property
    def entries(self) -> list[Entry]:
        return [e for e in CATALOG if self.name in e.patch_sets]

    @property
    def applied(self) -> list[Entry]:
        return [e for e in self.entries if e.kind in APPLIED_KINDS]


def _model(folder: str) -> str:
    return f"molmo2_shim.patches.{folder}.model:Molmo2ForConditionalGeneration"


PATCH_SETS = {
    NATIVE: PatchSet(NATIVE, "any vLLM with its own Molmo2 (0.15+): the shim stands down", None),
    V0_11_0: PatchSet(V0_11_0, "get_multimodal_embeddings / get_input_embeddings, merge by token id", _model(V0_11_0)),
    V0_11_1: PatchSet(V0_11_1, "embed_multimodal / embed_input_ids with an is_multimodal mask", _model(V0_11_1)),
    V0_12: PatchSet(V0_12, "as 0.11.1 (same model class); input processing moved to InputProcessor", _model(V0_11_1)),
    V0_13: PatchSet(V0_13, "as 0.11.1, merge_by_field_config gone, encoder budgets count embeddings", _model(V0_13)),
    V0_22: PatchSet(V0_22, "ProcessorInputs, renderers, CPU placeholder masks (opt-in override of native)", _model(V0_22)),
}

CONFIG_UPSTREAM = "transformers >= 5.20 knows molmo2, but vLLM 0.11-0.14 pin transformers < 5"
CONFIG_REMOVE_WHEN = "the supported vLLM versions run on transformers >= 5.20"
PREFIX_MASK_UPSTREAM = "attention backends taking a whole-sequence bidirectional prefix mask"
BOS_UPSTREAM = "vLLM routing text-only prompts of multimodal models through the model's processor"
MEDIA_UPSTREAM = "vLLM mapping media decoding errors to 4xx (0.22 maps OSError itself)"
SCHEDULER_REMOVE_WHEN = (
    "the shim runs on a vLLM whose attention backends take a whole-sequence multimodal prefix mask and the model "
    "uses it (0.15+ has mm_prefix_range, but per image only, which is not the original's mask)"
)

CATALOG: list[Entry] = [
    # -- registries -----------------------------------------------------------------------
    Entry(
        "vLLM config registry: molmo2 -> built-in Molmo2Config", REGISTRY,
        "vllm.transformers_utils.config:_CONFIG_REGISTRY", EVERY_SET,
        why="checkpoints load without trust_remote_code: vLLM consults this registry before transformers and "
            "before the hub's remote code (native Molmo2 on transformers < 5 needs it too)",
        upstream=CONFIG_UPSTREAM, remove_when=CONFIG_REMOVE_WHEN,
        apply=registries.register_vllm_config,
    ),
    Entry(
        "vLLM configs package: Molmo2ShimConfig attribute", REGISTRY,
        "vllm.transformers_utils.configs", EVERY_SET,
        why="the config registry's entries name attributes of this package (0.11.0 accepts nothing else); "
            "published when vLLM imports the package, so install() does not import every config class",
        upstream=CONFIG_UPSTREAM, remove_when=CONFIG_REMOVE_WHEN,
        apply=registries.publish_config_class,
    ),
    Entry(
        "transformers AutoConfig / AutoProcessor: molmo2", REGISTRY,
        "transformers.models.auto.processing_auto:PROCESSOR_MAPPING", EVERY_SET,
        why="verl, vLLM's processor lookups and users call AutoConfig/AutoProcessor.from_pretrained; the shim's "
            "config and processor answer without remote code",
        upstream="transformers >= 5.20 ships Molmo2 (its processor offsets pooling indices differently)",
        remove_when="transformers < 5.20 leaves every supported row",
        apply=registries.register_auto_classes,
    ),
    Entry(
        "vLLM ModelRegistry: Molmo2ForConditionalGeneration -> the shim's model", REGISTRY,
        "vllm.model_executor.models.registry:ModelRegistry", SHIM_MODEL_SETS,
        why="vLLM < 0.15 has no Molmo2; on 0.22 the opt-in override replaces the native one, which differs from "
            "the original (docs/native-vs-original.md). A lazy 'module:Class' reference, so vLLM's inspection "
            "child imports it on its own",
        upstream="a native Molmo2 equal to the original", remove_when="never for 0.11-0.14",
        apply=registries.register_model,
    ),
    # -- scheduler ------------------------------------------------------------------------
    Entry(
        "prefix-cache hits keep Molmo2 image regions whole", WRAP,
        "vllm.v1.core.kv_cache_manager:KVCacheManager.get_computed_blocks", SHIM_MODEL_SETS,
        why="the image rows are recomputed with the original's bidirectional mask from the keys of one step, "
            "which needs the region from position 0: a hit ending inside or before the region is dropped; one "
            "covering it is kept (its KV was computed exactly for the same images)",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=scheduling.drop_prefix_hits_inside_regions,
    ),
    Entry(
        "prefill chunks keep Molmo2 image regions whole (encoder budget counts placeholder tokens)", WRAP,
        "vllm.v1.core.sched.scheduler:Scheduler._try_schedule_encoder_inputs", (V0_11_0, V0_11_1, V0_12),
        why="a waiting request is held back for a step rather than split inside its image region, when the region "
            "fits into one step at all; 0.11-0.12 count an item's placeholder tokens against the encoder budget",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=scheduling.hold_back_counting_tokens,
    ),
    Entry(
        "prefill chunks keep Molmo2 image regions whole (encoder budget counts embeddings)", WRAP,
        "vllm.v1.core.sched.scheduler:Scheduler._try_schedule_encoder_inputs", (V0_13, V0_22),
        why="a waiting request is held back for a step rather than split inside its image region, when the region "
            "fits into one step at all; from 0.13 on the encoder budget counts an item's embeddings "
            "(PlaceholderRange.get_num_embeds)",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=scheduling.hold_back_counting_embeddings,
    ),
    Entry(
        "vocabulary size covers Molmo2 image token ids", WRAP,
        "vllm.config.model:ModelConfig.get_vocab_size", SHIM_MODEL_SETS,
        why="image special-token ids lie past the LM head; vLLM sizes prompt-logprob and penalty buffers by this "
            "number, so with the head's size they index out of range and kill the engine (as on native Molmo2)",
        upstream="vLLM sizing sampler buffers by the tokenizer", remove_when="never needed by such a vLLM",
        apply=scheduling.vocabulary_with_image_tokens,
    ),
    Entry(
        "weight syncs leave no stale encoder outputs", WRAP,
        "vllm.v1.core.sched.scheduler:Scheduler.reset_prefix_cache", SHIM_MODEL_SETS,
        why="vLLM reuses a repeated image's encoder output across requests; after verl syncs new weights and calls "
            "reset_prefix_cache(), the old-weights features would still be reused. The reset also evicts every "
            "encoder output no running request uses (scheduler and model runner, through vLLM's own eviction "
            "channel); processed pixels stay cached",
        upstream="reset_prefix_cache (or a weight update) resetting the encoder cache; 0.22 has reset_encoder_cache, "
                 "which verl does not call",
        remove_when="verl resets the encoder cache on every supported version",
        apply=caches.forget_encoder_outputs_on_reset,
    ),
    Entry(
        "engine settings that lose exactness are adjusted or refused at start", WRAP,
        "vllm.engine.arg_utils:EngineArgs.create_engine_config", SHIM_MODEL_SETS,
        why="pipeline parallelism (later stages lack the image mask), CUDA graphs that capture prefill batches whole "
            "(FULL: the image-row recomputation never runs; switched to a compatible mode), and step budgets "
            "below one image region would silently deviate from the original; refused with the value that works "
            "unless MOLMO2_SHIM_ALLOW_INEXACT=1. Runs in the process that builds the engine, before it starts",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=exactness.check_engine_config,
    ),
    Entry(
        "requests that cannot be exact are refused, or logged and counted (0.11)", WRAP,
        "vllm.v1.engine.processor:Processor.process_inputs", (V0_11_0, V0_11_1),
        why="a request whose image region is longer than one prefill step (max_num_batched_tokens, "
            "long_prefill_token_threshold, encoder budget) cannot get the original's mask: refused with the setting "
            "to change, or with MOLMO2_SHIM_ALLOW_INEXACT=1 logged with its id and counted "
            "(vllm:molmo2_shim_inexact_requests_total). Runs where prompts become requests and /metrics is served",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=exactness.check_requests_counting_tokens,
    ),
    Entry(
        "requests that cannot be exact are refused, or logged and counted (0.12)", WRAP,
        "vllm.v1.engine.input_processor:InputProcessor.process_inputs", (V0_12,),
        why="as on 0.11; 0.12 renamed the processor to InputProcessor; the encoder budget still counts tokens",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=exactness.check_requests_counting_tokens,
    ),
    Entry(
        "requests that cannot be exact are refused, or logged and counted (0.13+)", WRAP,
        "vllm.v1.engine.input_processor:InputProcessor.process_inputs", (V0_13, V0_22),
        why="as on 0.12; from 0.13 on the encoder budget counts embeddings",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
        apply=exactness.check_requests_counting_embeddings,
    ),
    Entry(
        "LoRA adapters: vision targets refused, native q/k/v and up/gate slices merged (0.11-0.12)", WRAP,
        "vllm.lora.models:LoRAModel.from_lora_tensors", (V0_11_0, V0_11_1, V0_12),
        why="vLLM applies LoRA to Molmo2's language model only, so an adapter's vision deltas would be dropped "
            "silently (refused instead); adapters trained on transformers' native Molmo2 train q/k/v and up/gate "
            "separately while the shim's layers are fused as in the original, so their deltas are merged exactly "
            "(block-diagonal B, stacked A). Runs for adapters from disk and from tensors (verl 0.7)",
        upstream="a model hook to rewrite adapter tensors before vLLM packs them",
        remove_when="never while the decoder stays fused like the original",
        apply=lora.molmo2_adapters,
    ),
    Entry(
        "LoRA adapters: vision targets refused, native q/k/v and up/gate slices merged (0.13+)", WRAP,
        "vllm.lora.lora_model:LoRAModel.from_lora_tensors", (V0_13, V0_22),
        why="as on 0.11-0.12; 0.13 moved LoRAModel to vllm.lora.lora_model",
        upstream="a model hook to rewrite adapter tensors before vLLM packs them",
        remove_when="never while the decoder stays fused like the original",
        apply=lora.molmo2_adapters,
    ),
    # -- inputs ---------------------------------------------------------------------------
    Entry(
        "BOS for Molmo2 text-only token prompts", WRAP,
        "vllm.inputs.preprocess:InputPreprocessor._process_tokens", UP_TO_0_14,
        why="the original prepends BOS (<|im_end|>) to every prompt; text-only prompts never reach the "
            "multimodal processor. Also refuses image special tokens typed into text",
        upstream=BOS_UPSTREAM,
        remove_when="0.14 leaves the compat matrix", apply=inputs.text_only_bos,
    ),
    Entry(
        "BOS for Molmo2 text-only text prompts", WRAP,
        "vllm.inputs.preprocess:InputPreprocessor._process_text", UP_TO_0_14,
        why="as for token prompts, for prompts given as text", upstream=BOS_UPSTREAM,
        remove_when="0.14 leaves the compat matrix", apply=inputs.text_only_bos,
    ),
    Entry(
        "BOS for Molmo2 text-only prompts (renderer)", WRAP,
        "vllm.renderers.base:BaseRenderer._process_tokens", (V0_22,),
        why="the original's BOS on text-only prompts; vLLM 0.22 renders prompts in the renderer, no longer in the "
            "input preprocessor", upstream=BOS_UPSTREAM,
        remove_when="0.22 leaves the compat matrix", apply=inputs.text_only_bos,
    ),
    Entry(
        "BOS for Molmo2 text-only prompts (async renderer)", WRAP,
        "vllm.renderers.base:BaseRenderer._process_tokens_async", (V0_22,),
        why="the renderer's async twin (the OpenAI server uses it)", upstream=BOS_UPSTREAM,
        remove_when="0.22 leaves the compat matrix", apply=inputs.text_only_bos_async,
    ),
    # -- media ----------------------------------------------------------------------------
    Entry(
        "undecodable images are 4xx, not 500", WRAP,
        "vllm.multimodal.image:ImageMediaIO.load_bytes", UP_TO_0_14,
        why="OSError / DecompressionBombError from PIL reach the OpenAI server as 500; the request is at fault",
        upstream=MEDIA_UPSTREAM,
        remove_when="0.14 leaves the compat matrix", apply=media.decode_errors_are_client_errors,
    ),
    Entry(
        "undecodable image files are 4xx, not 500", WRAP,
        "vllm.multimodal.image:ImageMediaIO.load_file", UP_TO_0_14,
        why="as for bytes, for file:// images", upstream=MEDIA_UPSTREAM,
        remove_when="0.14 leaves the compat matrix", apply=media.decode_errors_are_client_errors,
    ),
    Entry(
        "decompression bombs are 4xx, not 500", WRAP,
        "vllm.multimodal.media.image:ImageMediaIO.load_bytes", (V0_22,),
        why="0.22 maps OSError to ValueError itself, but decompression bombs still surface as a 500",
        upstream="vLLM mapping DecompressionBombError to 4xx", remove_when="0.22 leaves the compat matrix",
        apply=media.decode_errors_are_client_errors,
    ),
    # -- the shim's multimodal processor (molmo2_shim/engine/multimodal.py) ---------------
    Entry(
        "prompt normalisation (replaces the PromptIndexTargets.start() insertion)", OVERRIDE,
        "vllm.multimodal.processing:BaseMultiModalProcessor.apply", SHIM_MODEL_SETS,
        why="all three prompt shapes verl and clients send (one <|image|> per image; none, as verl-agent sends; "
            "ids already expanded by the HF processor) become the original processor's ids before vLLM expands "
            "placeholders. The design card's first plan, a PromptUpdate targeting PromptIndexTargets.start(), "
            "covers only the placeholder-free shape, cannot write the template's 'Image k' labels for several "
            "images and would double expanded blocks; normalising the prompt covers all three",
        upstream="none planned: the original processor itself drops images without placeholders",
        remove_when="never, while verl-agent sends placeholder-free prompts",
    ),
    Entry(
        "placeholders are expanded by vLLM, not by the HF processor", OVERRIDE,
        "vllm.multimodal.processing:BaseMultiModalProcessor._hf_processor_applies_updates", SHIM_MODEL_SETS,
        why="the shim's processor returns the normalised ids unexpanded; vLLM then replaces each <|image|> / "
            "<|video|> with the item's tokens and records the placeholder ranges the features land on",
        upstream="none needed", remove_when="never (this is the processor contract the shim chose)",
    ),
    Entry(
        "multimodal identifiers cover the whole prompt region", OVERRIDE,
        "vllm.multimodal.processing:BaseMultiModalProcessor._hash_mm_items", UP_TO_0_14,
        why="image tokens attend to later images at prefill, so cached KV blocks are only valid for the same "
            "images in the same layout; vLLM keys blocks by the identifiers of the items they overlap",
        upstream="prefix-cache keys that cover every multimodal item of a request", remove_when=SCHEDULER_REMOVE_WHEN,
    ),
    Entry(
        "multimodal identifiers cover the whole prompt region (0.22)", OVERRIDE,
        "vllm.multimodal.processing:ProcessorInputs.get_mm_hashes", (V0_22,),
        why="image tokens attend to later images at prefill, so cached KV blocks are only valid for the same "
            "images in the same layout; 0.22 derives the item hashes from ProcessorInputs",
        upstream="prefix-cache keys that cover every multimodal item of a request", remove_when=SCHEDULER_REMOVE_WHEN,
    ),
    Entry(
        "the built-in processor instead of remote code", OVERRIDE,
        "vllm.multimodal.processing:BaseMultiModalProcessor._call_hf_processor", SHIM_MODEL_SETS,
        why="pixels, pooling indices and layouts bit-identical to the original processor, without "
            "trust_remote_code, fast",
        upstream="none needed", remove_when="never",
    ),
    Entry(
        "video items keep their metadata (timestamps)", OVERRIDE,
        "vllm.multimodal.processing:BaseMultiModalProcessor._get_data_parser", UP_TO_0_14,
        why="frame timestamps (index / fps) are part of the token layout, so videos need their metadata",
        upstream="none needed", remove_when="0.14 leaves the compat matrix",
    ),
    Entry(
        "video items keep their metadata (0.22)", OVERRIDE,
        "vllm.multimodal.processing:BaseProcessingInfo.get_data_parser", (V0_22,),
        why="frame timestamps are part of the token layout; 0.22 builds the data parser in the processing info",
        upstream="none needed",
        remove_when="0.22 leaves the compat matrix",
    ),
    Entry(
        "profiling may mix images and video", OVERRIDE,
        "vllm.multimodal.profiling:BaseDummyInputsBuilder.get_dummy_mm_data", UP_TO_0_14,
        why="vLLM profiles every modality in one prompt, a mix the original refuses from users; the dummy data is "
            "marked so the processor lets it through for profiling only",
        upstream="none needed", remove_when="0.14 leaves the compat matrix",
    ),
    Entry(
        "profiling may mix images and video (0.22)", OVERRIDE,
        "vllm.multimodal.processing:BaseDummyInputsBuilder.get_dummy_processor_inputs", (V0_22,),
        why="vLLM profiles every modality in one prompt; 0.22 parses dummy items before the processor sees them, "
            "so the mark rides on the ProcessorInputs", upstream="none needed",
        remove_when="0.22 leaves the compat matrix",
    ),
    Entry(
        "the processor is registered with the model class", OVERRIDE,
        "vllm.multimodal.registry:MultiModalRegistry.register_processor", SHIM_MODEL_SETS,
        why="vLLM finds a model's multimodal processor through this decorator on the model class",
        upstream="none needed", remove_when="never",
    ),
    # -- the shim's model (molmo2_shim/model, thin adapters in patches/<set>/model.py) ----
    Entry(
        "model hooks: get_multimodal_embeddings / get_input_embeddings", OVERRIDE,
        "vllm.model_executor.models.interfaces:SupportsMultiModal.get_multimodal_embeddings", (V0_11_0,),
        why="0.11.0's runner calls these names and passes no placeholder mask: features are added at <im_patch> "
            "ids (safe: the processor refuses image tokens outside image blocks)",
        upstream="none needed", remove_when="0.11.0 leaves the compat matrix",
    ),
    Entry(
        "model hooks: embed_multimodal / embed_input_ids", OVERRIDE,
        "vllm.model_executor.models.interfaces:SupportsMultiModal.embed_multimodal", (V0_11_1, V0_12, V0_13, V0_22),
        why="0.11.1 renamed the hooks and passes the placeholder mask. The embeddings are ADDED to the <im_patch> "
            "token embeddings, as in the original (vLLM's generic merge replaces them)",
        upstream="none needed", remove_when="never",
    ),
    Entry(
        "merge_by_field_config = True", ATTRIBUTE,
        "vllm.model_executor.models.interfaces:SupportsMultiModal.merge_by_field_config", (V0_11_0, V0_11_1, V0_12),
        why="flat multimodal fields arrive concatenated per batch (False is deprecated in 0.11.1); 0.13 dropped "
            "the switch (always on), so the 0.13 adapter sets no value",
        upstream="done in 0.13", remove_when="0.12 leaves the compat matrix",
    ),
    Entry(
        "LoRA support: SupportsLoRA, hf_to_vllm_mapper (adapter names), get_mm_mapping (language model only)", OVERRIDE,
        "vllm.model_executor.models.interfaces:SupportsLoRA", SHIM_MODEL_SETS,
        why="vLLM serves adapters only for models implementing SupportsLoRA; the mapper renames the original's "
            "att_proj/attn_out/ff_proj/ff_out and native q/k/v/o/gate/up/down names onto the fused layers; "
            "get_mm_mapping keeps LoRA off the vision path (vLLM would feed it the text batch's LoRA mapping)",
        upstream="none needed", remove_when="never",
    ),
    Entry(
        "the bidirectional-prefill op splits compiled graphs", OVERRIDE,
        "vllm.config.compilation:CompilationConfig.splitting_ops", SHIM_MODEL_SETS,
        why="the op that recomputes image rows reads the step's plan in Python, so torch.compile and piecewise "
            "CUDA graphs must cut their graphs at it, as at attention (the model appends it at construction)",
        upstream="attention backends taking the original's prefix mask", remove_when=SCHEDULER_REMOVE_WHEN,
    ),
]


CATALOG += [
    Entry(
        "vLLM's multimodal prefix-LM attention switched off for the shim's model (model_arch_config.is_mm_prefix_lm)",
        INTERNAL, "vllm.config.model:ModelConfig.is_mm_prefix_lm", (V0_22,),
        why="0.22 lists molmo2 as a prefix LM: per-image bidirectional ranges in the attention backend (native's "
            "approximation) and a backend that supports them (Triton's, for every step). The shim's model applies "
            "the original's mask itself, so the ranges are wasted work on a slower backend (and a deviation for "
            "causal-image checkpoints); the create_engine_config wrapper sets the flag to False for the shim's model",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
    ),
    Entry(
        "the attention backend native Molmo2 gets, kept for the shim's model (the platform's selector asked for a "
        "prefix LM; set as attention_config.backend where the user set none)",
        INTERNAL, "vllm.v1.attention.selector:AttentionSelectorConfig", (V0_22,),
        why="with the prefix-LM flag off vLLM would choose as for a causal model (FlashAttention 3 on Hopper), which "
            "decodes short contexts slower than the Triton backend native Molmo2 runs on (docs/benchmarks.md, "
            "session 5); the create_engine_config wrapper keeps native's choice, the user's attention_backend wins",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
    ),
    Entry(
        "the platform's attention backend selection", INTERNAL,
        "vllm.platforms.interface:Platform.get_attn_backend_cls", (V0_22,),
        why="asked once at engine configuration, with use_mm_prefix=True, for the backend native Molmo2 gets",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
    ),
    Entry(
        "encoder cache bookkeeping: freeable, cached, freed, num_free_slots", INTERNAL,
        "vllm.v1.core.encoder_cache_manager:EncoderCacheManager.free_encoder_input", SHIM_MODEL_SETS,
        why="the reset_prefix_cache wrapper evicts unused encoder outputs exactly as EncoderCacheManager.can_allocate "
            "does under memory pressure (same four fields in 0.11-0.22); the freed list is how the model runner learns "
            "to drop them",
        upstream="a public encoder-cache reset called on weight updates", remove_when="with the reset_prefix_cache wrapper",
    ),
    Entry(
        "the front end's processor cache record (MultiModalProcessorSenderCache._cache)", INTERNAL,
        "vllm.multimodal.cache:MultiModalProcessorSenderCache.get_and_update_item", SHIM_MODEL_SETS,
        why="a request refused after processing never reaches the engine, but the front end has recorded its items "
            "as sent; they are dropped from that record, or the next request with the same image would send only its "
            "key and kill the engine ('Expected a cached item')",
        upstream="vLLM recording items as sent only once the request is added to the engine",
        remove_when="vLLM rolls the record back for requests that fail validation",
    ),
    Entry(
        "per-request offsets of the step's flat batch (attention metadata query_start_loc)", INTERNAL,
        "vllm.forward_context:get_forward_context", SHIM_MODEL_SETS,
        why="the image-row recomputation needs where each request starts in the step's flat token batch; read from "
            "the attention metadata in the forward context (query_start_loc_cpu or query_start_loc)",
        upstream=PREFIX_MASK_UPSTREAM, remove_when=SCHEDULER_REMOVE_WHEN,
    ),
]


def patch_set(name: str) -> PatchSet:
    try:
        return PATCH_SETS[name]
    except KeyError:
        raise KeyError(f"compat_matrix.yaml names patch set {name!r}, which the catalog does not define") from None


def resolve(target: str) -> Any:
    """Import a catalog target and return the object it names (raises if it does not exist).

    The last name may also be a dataclass field without a class-level default (vLLM's config
    classes declare most settings that way); then the field itself is returned.
    """
    import importlib

    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    parts = qualname.split(".") if qualname else []
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        fields = getattr(obj, "__dataclass_fields__", {})
        if i == len(parts) - 1 and part in fields:
            return fields[part]
        raise AttributeError(f"{target}: {'.'.join(parts[:i]) or module_name} has no attribute {part!r}")
    return obj
