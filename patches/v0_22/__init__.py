"""Patch set for vLLM 0.22.x, used only when the user opts in to replace vLLM's native Molmo2
(MOLMO2_SHIM_OVERRIDE_NATIVE=1 / install(override_native=True)).

API generation: the processor's apply() takes one ProcessorInputs (hashes come from its
get_mm_hashes); prompts reach the processor through the renderer (vllm/renderers), not the
input preprocessor; the runner passes a CPU placeholder mask; decoder attention lives in
vllm.model_executor.layers.attention.

vLLM 0.22 marks model_type molmo2 as a prefix-LM (bidirectional attention within runs of
embedding positions, Triton backend). That stays on: the shim's recomputation overwrites every
multimodal row with the original's whole-sequence mask afterwards, and where it cannot (a
region split across chunks) vLLM's partial bidirectionality is closer to the original than
causal attention. (Measured on an H200: switching it off to get FlashAttention 3 made decode
~9% slower than native, which runs on Triton.)
What the set changes in vLLM: patches/catalog.py (patch set "v0_22").
"""
