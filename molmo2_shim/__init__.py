"""molmo2-shim: Molmo2 on pinned vLLM versions, equal to the original implementation.

    import molmo2_shim
    molmo2_shim.install()

or nothing at all: the `vllm.general_plugins` entry point calls install() in every vLLM
process. Importing this package is cheap: no torch, no vLLM, no model code.
"""

from .activation.installer import InstallStatus, install, status, uninstall
from .engine.exactness import inexact_requests
from .errors import (
    InvalidVLLMVersionError,
    Molmo2ConfigError,
    Molmo2InputError,
    Molmo2ShimError,
    PatchError,
    UnsupportedVLLMVersionError,
    VLLMNotInstalledError,
)

__version__ = "0.1.0"

__all__ = [
    "InstallStatus",
    "InvalidVLLMVersionError",
    "Molmo2ConfigError",
    "Molmo2InputError",
    "Molmo2ShimError",
    "PatchError",
    "UnsupportedVLLMVersionError",
    "VLLMNotInstalledError",
    "inexact_requests",
    "install",
    "status",
    "uninstall",
]
