"""The original Molmo2 processor and config, reproduced without remote code: tokens, layouts,
pixels and pooling indices bit-identical to the hub's. No vLLM here (transformers and torch
only), so trainers can use it.
"""
