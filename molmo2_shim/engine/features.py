"""Every difference between vLLM versions that code shared by several patch sets must handle,
detected from the installed vLLM itself (one place, so it is easy to see what varies).

The compat matrix row picks the patch set; inside a patch set, these probes pick the variant.
They look at signatures and attributes, never at version numbers, so a patch release that
backports an API keeps working. Each probe imports vLLM lazily and caches its answer:
activation imports this module's users without importing vLLM, and per-step callers pay a
dictionary lookup at most.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# q [Q, H, D], k and v [K, Hkv, D], cumulative query and key offsets (int32), the longest
# query and key sequence, the softmax scale -> [Q, H, D]; non-causal within each sequence.
VarlenKernel = Callable[..., "torch.Tensor"]


@functools.lru_cache(maxsize=1)
def attention_class() -> type:
    """The decoder attention layer: moved from vllm.attention to vllm.model_executor.layers in 0.16."""
    try:
        from vllm.model_executor.layers.attention import Attention
    except ImportError:
        from vllm.attention.layer import Attention  # type: ignore[no-redef]
    return Attention


@functools.lru_cache(maxsize=1)
def dummy_inputs_builder_class() -> type:
    """BaseDummyInputsBuilder: vllm.multimodal.profiling up to 0.14, vllm.multimodal.processing after."""
    try:
        from vllm.multimodal.profiling import BaseDummyInputsBuilder
    except ImportError:
        from vllm.multimodal.processing import BaseDummyInputsBuilder  # type: ignore[no-redef]
    return BaseDummyInputsBuilder


def make_rope(head_dim: int, max_position: int, theta: float, scaling: dict[str, Any] | None) -> Any:
    """vLLM's rotary embedding for vLLM-style scaling entries (molmo2_shim.model.rope translates
    the checkpoint's): `base`/`rope_scaling` keywords up to 0.11, `rope_parameters` from 0.12,
    `rotary_dim` dropped in 0.13."""
    from vllm.model_executor.layers.rotary_embedding import get_rope

    params = inspect.signature(get_rope).parameters
    if "rope_parameters" in params:
        kwargs: dict[str, Any] = {"max_position": max_position, "is_neox_style": True,
                                  "rope_parameters": {**(scaling or {"rope_type": "default"}), "rope_theta": theta}}
        if "rotary_dim" in params:
            kwargs["rotary_dim"] = head_dim
        return get_rope(head_dim, **kwargs)
    return get_rope(
        head_dim, rotary_dim=head_dim, max_position=max_position, base=theta,
        is_neox_style=True, rope_scaling=scaling,
    )


@functools.lru_cache(maxsize=1)
def yarn_accepts_truncate() -> bool:
    """Whether vLLM's YaRN takes `truncate` (0.12+); older versions always truncate."""
    from vllm.model_executor.layers.rotary_embedding.yarn_scaling_rope import YaRNScalingRotaryEmbedding

    return "truncate" in inspect.signature(YaRNScalingRotaryEmbedding.__init__).parameters


def num_embeds(position: Any) -> int:
    """Embedding rows of a PlaceholderRange: a cached property in 0.13/0.14, a method in 0.22."""
    value = position.get_num_embeds
    return int(value() if callable(value) else value)


def placeholder_tokens(position: Any) -> int:
    return int(position.length)


def empty_blocks(kv_cache_manager: Any) -> Any:
    """A KVCacheManager's "no cached blocks" value (a shared constant from 0.11.1 on)."""
    empty = getattr(kv_cache_manager, "empty_kv_cache_blocks", None)
    return empty if empty is not None else kv_cache_manager.create_empty_block_list()


def query_start_loc(num_tokens: int) -> list[int] | None:
    """Per-request start offsets of the current step's flat batch, from vLLM's attention
    metadata (one object, or one per layer in a dict, depending on the version)."""
    try:
        from vllm.forward_context import get_forward_context

        meta: Any = get_forward_context().attn_metadata
    except Exception:  # no forward context (e.g. a unit test calling the model directly)
        return None
    if isinstance(meta, dict):
        meta = next(iter(meta.values()), None)
    for name in ("query_start_loc_cpu", "query_start_loc"):
        qsl = getattr(meta, name, None)
        if qsl is not None and hasattr(qsl, "tolist") and qsl.numel() >= 2:
            values = qsl.tolist()
            if values[0] == 0 and values[-1] == num_tokens:
                return values
    return None


def loaded_image(result: Any) -> Any:
    """The PIL image of an ImageMediaIO load (0.14 wraps it together with its bytes)."""
    return getattr(result, "media", result)


def engine_core_request(processed: Any) -> Any:
    """The EngineCoreRequest of Processor.process_inputs (0.11.0 returns it with the prompt text)."""
    return processed[-1] if isinstance(processed, tuple) else processed


def argument_parser() -> Any:
    """vLLM's FlexibleArgumentParser (vllm.utils up to 0.11.0, vllm.utils.argparse_utils after)."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef,attr-defined]
    return FlexibleArgumentParser()


def processor_cache(input_processor: Any) -> Any:
    """The front end's multimodal processor cache (on the renderer from 0.22)."""
    cache = getattr(input_processor, "mm_processor_cache", None)
    if cache is None:
        cache = getattr(getattr(input_processor, "renderer", None), "mm_processor_cache", None)
    return cache


@functools.lru_cache(maxsize=1)
def varlen_kernels() -> dict[str, VarlenKernel]:
    """Fused non-causal attention over packed variable-length sequences (CUDA, fp16/bf16 only),
    fastest first: vLLM's own FlashAttention build (fa_utils lives in vllm.attention.utils up to
    0.13, in vllm.v1.attention.backends from 0.14), then torch's varlen_attn (torch 2.10+)."""
    kernels: dict[str, VarlenKernel] = {}
    for module in ("vllm.v1.attention.backends.fa_utils", "vllm.attention.utils.fa_utils"):
        try:
            fa = importlib.import_module(module)
            version = fa.get_flash_attn_version() if fa.is_flash_attn_varlen_func_available() else None
            supported = getattr(fa, "is_fa_version_supported", None)
            if version is not None and supported is not None and not supported(version):
                version = None  # e.g. a build that ships FA3 only, on a GPU that needs FA2
        except Exception:  # not this version's module, or a platform without FlashAttention
            continue
        if version is not None:
            kernels["vllm-flash"] = functools.partial(_vllm_flash, fa.flash_attn_varlen_func, version)
        break
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return kernels
    kernels["torch-varlen"] = functools.partial(_torch_varlen, varlen_attn, "scale" in inspect.signature(varlen_attn).parameters)
    return kernels


def _vllm_flash(fn: Any, fa_version: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor,
                cu_k: torch.Tensor, max_q: int, max_k: int, scale: float) -> torch.Tensor:
    # FlashAttention takes grouped-query K/V as they are (fewer heads than q).
    return fn(q, k, v, max_seqlen_q=max_q, cu_seqlens_q=cu_q, max_seqlen_k=max_k, cu_seqlens_k=cu_k,
              softmax_scale=scale, causal=False, fa_version=fa_version)


def _torch_varlen(fn: Any, takes_scale: bool, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor,
                  cu_k: torch.Tensor, max_q: int, max_k: int, scale: float) -> torch.Tensor:
    # torch's wrapper wants as many K/V heads as query heads; 2.10's takes no scale (1/sqrt(D)).
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if takes_scale:
        return fn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale)
    default = q.shape[-1] ** -0.5
    return fn(q if scale == default else q * (scale / default), k, v, cu_q, cu_k, max_q, max_k)
