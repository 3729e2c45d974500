"""Glue to vLLM shared by every patch set: the multimodal processor vLLM runs, the identifiers
that mark the shim's model and items, the scheduling rules that keep image regions exact, and
the feature probes for what differs between vLLM versions.
"""
