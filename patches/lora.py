"""LoRA adapters for the shim's Molmo2: vision targets refused, native split slices merged.

vLLM builds every adapter (from disk, or from tensors as verl 0.7 does) with
LoRAModel.from_lora_tensors, passing the model's `hf_to_vllm_mapper`. When that mapper is the
shim's (molmo2_shim.model.lora.AdapterNames), the adapter's tensors are rewritten first; other
models' adapters pass through untouched. The rules are molmo2_shim.model.lora.
"""

from __future__ import annotations

from typing import Any


def molmo2_adapters(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    mapper = kwargs.get("weights_mapper")
    sizes = getattr(mapper, "fused_out_sizes", None)
    if not sizes:
        return wrapped(*args, **kwargs)
    from molmo2_shim.model.lora import prepare_adapter

    max_rank = getattr(mapper, "max_lora_rank", None)
    if "tensors" in kwargs:
        kwargs = dict(kwargs, tensors=prepare_adapter(kwargs["tensors"], sizes, max_rank))
    else:  # (lora_model_id, tensors, ...)
        args = (args[0], prepare_adapter(args[1], sizes, max_rank), *args[2:])
    return wrapped(*args, **kwargs)
