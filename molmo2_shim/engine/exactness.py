"""Which engine settings and which requests the shim computes exactly, and what happens when
it cannot: a clear refusal by default, or, with the opt-out, a logged and counted deviation.

The original attends bidirectionally across a prompt's whole multimodal region at prefill.
The shim reproduces that by recomputing the region's rows from the keys of one step (see
molmo2_shim/model/bidirectional.py), so a region must fit into one prefill step of one request:
`max_num_batched_tokens`, `long_prefill_token_threshold` (when set) and the encoder budget all
bound it. Settings that break the recomputation for every request (pipeline parallelism, CUDA
graphs that capture prefill batches whole) are handled at engine start.

MOLMO2_SHIM_ALLOW_INEXACT=1 is the opt-out: such engines start and such requests run, with
vLLM's causal attention where the region cannot be recomputed; each request is logged with its
id and reason and counted (`inexact_requests()`, and `vllm:molmo2_shim_inexact_requests_total`
on the server's /metrics and in `LLM.get_metrics()`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import Molmo2ConfigError, Molmo2InputError
from .scheduling import Region, region_fits

logger = logging.getLogger("molmo2_shim")

ENV_ALLOW_INEXACT = "MOLMO2_SHIM_ALLOW_INEXACT"
METRIC_NAME = "vllm:molmo2_shim_inexact_requests"

# Reasons a request runs inexactly (the `reason` label of the counter).
REGION_TOO_LONG = "region_longer_than_a_step"
PIPELINE_PARALLEL = "pipeline_parallel"
FULL_CUDA_GRAPHS = "prefill_in_full_cuda_graphs"


def allow_inexact() -> bool:
    return os.environ.get(ENV_ALLOW_INEXACT, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class StepLimits:
    """How much of one request's prompt one prefill step can hold."""

    max_num_batched_tokens: int
    long_prefill_token_threshold: int  # 0: not set
    encoder_budget: int  # in the unit the running vLLM's encoder budget counts

    @property
    def tokens(self) -> int:
        t = self.long_prefill_token_threshold
        return min(self.max_num_batched_tokens, t) if t > 0 else self.max_num_batched_tokens

    def binding_setting(self) -> str:
        t = self.long_prefill_token_threshold
        if 0 < t < self.max_num_batched_tokens:
            return f"long_prefill_token_threshold={t}"
        return f"max_num_batched_tokens={self.max_num_batched_tokens}"

    def fits(self, region: Region) -> bool:
        return region_fits(region, self.tokens, self.encoder_budget)

    @classmethod
    def of_scheduler_config(cls, sc: Any) -> StepLimits:
        encoder = min(int(getattr(sc, "max_num_encoder_input_tokens", sc.max_num_batched_tokens)),
                      int(getattr(sc, "encoder_cache_size", sc.max_num_batched_tokens)))
        return cls(int(sc.max_num_batched_tokens), int(getattr(sc, "long_prefill_token_threshold", 0) or 0), encoder)


# -- counting -----------------------------------------------------------------------------------

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_metric: Any = None


def inexact_requests() -> dict[str, int]:
    """Requests this process let run inexactly (only with the opt-out), by reason."""
    with _lock:
        return dict(_counts)


def _prometheus_counter() -> Any:
    """The counter on vLLM's prometheus registry, (re-)registered on use: vLLM unregisters every
    collector named like its own when an engine starts, so a later engine would hide it."""
    global _metric
    try:
        from prometheus_client import REGISTRY
        from prometheus_client import Counter as PromCounter
    except ImportError:  # pragma: no cover - vLLM depends on prometheus_client
        return None
    if _metric is None:
        _metric = PromCounter(METRIC_NAME, "Molmo2 requests molmo2-shim ran inexactly (MOLMO2_SHIM_ALLOW_INEXACT)",
                              ["reason"], registry=None)
    try:
        REGISTRY.register(_metric)
    except ValueError:  # already registered
        pass
    return _metric


def record_inexact(request_id: str, reason: str, detail: str) -> None:
    with _lock:
        _counts[reason] += 1
    counter = _prometheus_counter()
    if counter is not None:
        counter.labels(reason=reason).inc()
    logger.warning("molmo2-shim: request %s runs inexactly (%s, %s=1): %s", request_id, reason, ENV_ALLOW_INEXACT, detail)


# -- per request ----------------------------------------------------------------------------------

def check_request(request_id: str, region: Region | None, limits: StepLimits, engine_reasons: list[str]) -> None:
    """Refuse a request the engine cannot compute exactly, or (opt-out) log and count it.

    `engine_reasons`: deviations of the engine itself that the opt-out let start (they affect
    every multimodal request).
    """
    if region is None:
        return
    if not limits.fits(region):
        detail = (f"its multimodal region ends at token {region.end} (encoder cost {region.encoder_tokens}), more than "
                  f"one prefill step takes ({limits.binding_setting()}, encoder budget {limits.encoder_budget}); "
                  "image tokens in later chunks attend causally")
        if not allow_inexact():
            raise Molmo2InputError(
                f"this request cannot be computed exactly: {detail}. The original attends bidirectionally across "
                "the whole image region, which molmo2-shim reproduces only within one prefill step. Raise "
                f"--max-num-batched-tokens to at least {region.end} (and --long-prefill-token-threshold to 0 or at least "
                f"that), send fewer or smaller images, or set {ENV_ALLOW_INEXACT}=1 to run such requests inexactly."
            )
        record_inexact(request_id, REGION_TOO_LONG, detail)
    for reason in engine_reasons:
        record_inexact(request_id, reason, f"the engine runs with {reason.replace('_', ' ')}")


# -- at engine start ---------------------------------------------------------------------------------

def refuse_unsupported_config(hf_config: Any) -> None:
    """Refuse a checkpoint config with values the shim's model would not compute like the
    original (never run it with a silently different model)."""
    from ..processing.config import unsupported_settings
    from .features import yarn_accepts_truncate

    problems = unsupported_settings(hf_config, yarn_accepts_truncate())
    if problems:
        raise Molmo2ConfigError("this Molmo2 config has settings molmo2-shim cannot compute like the original "
                                "implementation: " + "; ".join(problems))


def leave_image_attention_to_the_model(model_config: Any) -> bool:
    """Switch vLLM's own multimodal prefix-LM attention off for the shim's model; True if it was on.

    vLLM 0.22 treats model_type "molmo2" as a prefix LM: its attention backend lets each image's
    rows attend within that image (native's approximation of the original's mask), and it picks
    a backend that supports such ranges (Triton's, not FlashAttention) for every step, decode
    included. The shim's model computes the original's mask itself (the image rows recomputed
    after causal attention), so vLLM's ranges would be work whose image-row outputs are then
    overwritten, on a slower backend; and for checkpoints whose image attention is causal
    (MolmoWeb) they would be a deviation. vLLM reads the flag from the model config when it
    builds the attention layers and the model runner, after this runs.
    """
    arch = getattr(model_config, "model_arch_config", None)
    if not getattr(arch, "is_mm_prefix_lm", False):
        return False
    arch.is_mm_prefix_lm = False
    return True


def keep_the_prefix_lm_attention_backend(vllm_config: Any) -> str | None:
    """Where the user chose no attention backend, choose the one vLLM picks for native Molmo2's
    decoder (a prefix LM); return its name, or None where the user chose one.

    Switching the prefix-LM flag off (above) would also change vLLM's backend choice: on Hopper,
    FlashAttention 3 instead of the Triton backend that native Molmo2 runs on. Measured on an H200
    (docs/benchmarks.md, session 5), Triton's unified attention decodes the short contexts of
    text prompts faster (text batches 1.011x the hub's engine with it, 0.94 - 0.97x with
    FlashAttention 3), and image batches stay above native either way. So the shim keeps the
    backend native runs, only without the per-image ranges; `attention_backend` still chooses.
    The choice asks the platform's own selector, as each attention layer would for a prefix LM,
    so on every platform it is the backend native Molmo2 gets there (the CPU's own on the CPU).
    """
    attention = getattr(vllm_config, "attention_config", None)
    if attention is None or attention.backend is not None:
        return None
    from vllm.config import set_current_vllm_config
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.attention.selector import AttentionSelectorConfig

    model, cache = vllm_config.model_config, vllm_config.cache_config
    selector = AttentionSelectorConfig(
        head_size=model.get_head_size(), dtype=model.dtype, kv_cache_dtype=cache.cache_dtype,
        block_size=cache.block_size if getattr(cache, "user_specified_block_size", False) else None,
        use_mm_prefix=True)
    with set_current_vllm_config(vllm_config):
        path = current_platform.get_attn_backend_cls(
            None, attn_selector_config=selector, num_heads=model.get_num_attention_heads(vllm_config.parallel_config))
    backend = AttentionBackendEnum(path)  # the members' values are their class paths
    attention.backend = backend
    return backend.name


@dataclass(frozen=True)
class RegionBounds:
    """The longest multimodal regions the engine's prompt limits allow (chat-template layout)."""

    one_image: int  # BOS + the largest image block
    all_images: int  # BOS + every allowed image at the largest size, with the template's labels
    images_explicit: bool  # the user set limit_mm_per_prompt["image"]
    video: int  # BOS + the longest video, 0 if videos are not allowed


def engine_reasons(vllm_config: Any) -> list[str]:
    """Deviations of the engine as configured (non-empty only with the opt-out)."""
    reasons = []
    if int(getattr(vllm_config.parallel_config, "pipeline_parallel_size", 1)) > 1:
        reasons.append(PIPELINE_PARALLEL)
    if _mixed_batches_fully_captured(vllm_config.compilation_config):
        reasons.append(FULL_CUDA_GRAPHS)
    return reasons


def _mixed_batches_fully_captured(compilation_config: Any) -> bool:
    mode = getattr(compilation_config, "cudagraph_mode", None)
    if mode is None or not hasattr(mode, "mixed_mode"):
        return False
    return mode.mixed_mode().name == "FULL"


def check_engine(vllm_config: Any, bounds: RegionBounds | None) -> list[str]:
    """Make the configured engine exact, refuse it, or (opt-out) let it start inexact.

    Returns what was changed or accepted, for the log. Raises Molmo2ConfigError.
    """
    notes: list[str] = []
    opt_out = allow_inexact()
    pp = int(getattr(vllm_config.parallel_config, "pipeline_parallel_size", 1))
    if pp > 1:
        message = (f"pipeline_parallel_size={pp}: later pipeline stages do not receive the image-token mask, so their "
                   "image rows would attend causally instead of bidirectionally as in the original. Use "
                   "pipeline_parallel_size=1 (tensor parallelism is exact)")
        if not opt_out:
            raise Molmo2ConfigError(f"{message}, or set {ENV_ALLOW_INEXACT}=1 to accept the deviation.")
        notes.append(f"{message}; accepted by {ENV_ALLOW_INEXACT}=1")
    cc = vllm_config.compilation_config
    if _mixed_batches_fully_captured(cc):
        if opt_out:
            notes.append(f"cudagraph_mode={cc.cudagraph_mode.name} captures prefill batches whole, so the image-row "
                         f"recomputation never runs in them; accepted by {ENV_ALLOW_INEXACT}=1")
        else:
            modes = type(cc.cudagraph_mode)  # vLLM's CUDAGraphMode
            chosen = modes.FULL_AND_PIECEWISE if cc.splitting_ops_contain_attention() else modes.FULL_DECODE_ONLY
            notes.append(f"cudagraph_mode={cc.cudagraph_mode.name} would capture prefill batches whole and skip the "
                         f"image-row recomputation; using {chosen.name} (decode batches stay fully captured)")
            cc.cudagraph_mode = chosen
    if bounds is not None:
        notes += _check_region_bounds(StepLimits.of_scheduler_config(vllm_config.scheduler_config), bounds,
                                      int(vllm_config.model_config.max_model_len), opt_out)
    return notes


def _check_region_bounds(limits: StepLimits, bounds: RegionBounds, max_model_len: int, opt_out: bool) -> list[str]:
    if bounds.one_image and bounds.one_image > limits.tokens:
        message = (f"{limits.binding_setting()} is below one Molmo2 image region (up to {bounds.one_image} tokens), "
                   "so no image prompt could be computed exactly. Set "
                   + ("long_prefill_token_threshold to 0 or at least " if "threshold" in limits.binding_setting()
                      else "max_num_batched_tokens to at least ")
                   + f"{bounds.one_image}")
        if not opt_out:
            raise Molmo2ConfigError(f"{message}, or set {ENV_ALLOW_INEXACT}=1 to run image prompts inexactly.")
        return [f"{message}; accepted by {ENV_ALLOW_INEXACT}=1 (every such request is logged and counted)"]
    needed = min(max_model_len, max(bounds.all_images, bounds.video))
    if needed <= limits.tokens:
        return []
    return [f"{limits.binding_setting()} fits one image region but not every prompt the limits allow (up to {needed} "
            f"tokens: {'the configured' if bounds.images_explicit else 'vLLM default'} per-prompt limits and "
            f"max_model_len={max_model_len}). Requests whose region is longer are "
            + ("run inexactly, logged and counted" if opt_out else f"refused ({ENV_ALLOW_INEXACT}=1 runs them inexactly)")
            + f"; max_num_batched_tokens >= {needed} keeps every prompt exact"]
