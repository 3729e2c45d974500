"""Diagnostics: what a prompt looks like, what went wrong and how to fix it."""
