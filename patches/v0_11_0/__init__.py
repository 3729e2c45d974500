"""Patch set for vLLM 0.11.0.

API generation: the runner calls `get_multimodal_embeddings(**kwargs)` and
`get_input_embeddings(input_ids, multimodal_embeddings)` with no placeholder mask, so the
model finds the <im_patch> positions by token id (safe: the shim's processor refuses image
special tokens outside image blocks). `merge_by_field_config = True` is opt-in here.
What the set changes in vLLM: patches/catalog.py (patch set "v0_11_0").
"""
