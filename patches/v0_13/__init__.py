"""Patch set for vLLM 0.13.x and 0.14.x.

API generation: as 0.11.1 (embed_multimodal / embed_input_ids), but `merge_by_field_config`
is gone: 0.13 raises on False and warns on True, 0.14 ignores it; the new batching is always
on. Encoder budgets count embeddings instead of placeholder tokens from 0.13 on.
What the set changes in vLLM: patches/catalog.py (patch set "v0_13").
"""
