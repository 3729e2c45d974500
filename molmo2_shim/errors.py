"""Typed errors, so callers (and verl workers) can tell a setup problem from a bad request."""

from __future__ import annotations


class Molmo2ShimError(Exception):
    """Base class of every error molmo2-shim raises on purpose."""


class VLLMNotInstalledError(Molmo2ShimError, ImportError):
    """install() needs vLLM in the same environment."""


class UnsupportedVLLMVersionError(Molmo2ShimError, RuntimeError):
    """The running vLLM is outside every supported row of compat_matrix.yaml."""

    def __init__(self, message: str, *, version: str, supported: list[str]) -> None:
        super().__init__(message)
        self.version = version
        self.supported = supported


class InvalidVLLMVersionError(UnsupportedVLLMVersionError):
    """vllm.__version__ is not a PEP 440 version at all."""


class PatchError(Molmo2ShimError, RuntimeError):
    """A patch could not be applied; everything applied before it was rolled back."""


class Molmo2ConfigError(Molmo2ShimError, ValueError):
    """An engine setting would make Molmo2's outputs differ from the original's; raised at engine
    start, with the setting's value that works and the opt-out (MOLMO2_SHIM_ALLOW_INEXACT=1)."""


class Molmo2InputError(Molmo2ShimError, ValueError):
    """A request's prompt or media cannot be turned into the original model's input.

    Raised while vLLM processes one request, so only that request fails.
    """
