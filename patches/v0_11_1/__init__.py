"""Patch set for vLLM 0.11.1 and 0.11.2 (0.12's patch set, v0_12, uses this folder's model class).

API generation: the runner calls `embed_multimodal(**kwargs)` and
`embed_input_ids(ids, multimodal_embeddings, is_multimodal=mask)`; `merge_by_field_config`
must be True to get flat fields concatenated (False logs a deprecation warning). 0.12 changed
get_rope's keywords (handled by molmo2_shim.engine.features) and renamed the input processor.
What the set changes in vLLM: patches/catalog.py (patch set "v0_11_1").
"""
