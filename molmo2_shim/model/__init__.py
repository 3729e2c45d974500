"""The Molmo2 model math, written once on vLLM's layers (per-version adapters: patches/)."""
