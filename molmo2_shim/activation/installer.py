"""install() / uninstall(): pick the patch set for the running vLLM and apply it reversibly.

The compat matrix row (matrix.py) names the patch set; the patch catalog
(molmo2_shim.patches.catalog) lists what that set changes; patching.py applies each change
when vLLM imports its module. No torch or vLLM import happens here beyond reading
`vllm.__version__`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from ..engine.identifiers import ARCHITECTURE, MODEL_REFERENCE
from ..errors import PatchError, UnsupportedVLLMVersionError, VLLMNotInstalledError
from ..patches.catalog import NATIVE, PatchSet, patch_set
from .matrix import NATIVE as NATIVE_STATUS
from .matrix import UNSUPPORTED, VersionMatch, lookup, supported_ranges
from .patching import Undo, apply_entry

logger = logging.getLogger("molmo2_shim")

ENV_DISABLE = "MOLMO2_SHIM_DISABLE"
ENV_OVERRIDE_NATIVE = "MOLMO2_SHIM_OVERRIDE_NATIVE"


@dataclass(frozen=True)
class InstallStatus:
    vllm_version: str
    row: str
    status: str  # the matrix status of the row
    action: str  # "installed" | "stood-down" | "disabled"
    patch_set: str | None = None
    registered: dict[str, str] = field(default_factory=dict)
    changes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.action == "installed":
            what = ", ".join(f"{a} -> {r}" for a, r in self.registered.items())
            return f"molmo2-shim: vLLM {self.vllm_version} (row {self.row}), patch set {self.patch_set}, registered {what}"
        if self.action == "stood-down":
            return (f"molmo2-shim: vLLM {self.vllm_version} has native Molmo2 (row {self.row}); standing down, no model "
                    "registered (the built-in config/processor only spare trust_remote_code); set "
                    f"{ENV_OVERRIDE_NATIVE}=1 or install(override_native=True) to use the shim's")
        return f"molmo2-shim: disabled by {ENV_DISABLE}; nothing registered"


_lock = threading.RLock()
_status: InstallStatus | None = None
_undo: list[Undo] = []


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def vllm_version() -> str:
    try:
        import vllm
    except ImportError as exc:
        raise VLLMNotInstalledError(
            "molmo2-shim needs vLLM in the same environment; supported: "
            + "; ".join(supported_ranges()) + ". Install e.g. `pip install vllm==0.11.2`."
        ) from exc
    version = getattr(vllm, "__version__", None)
    if version is None:
        raise VLLMNotInstalledError("the installed vllm package has no __version__; reinstall vLLM")
    return str(version)


def active_patch_set(match: VersionMatch, override_native: bool) -> PatchSet | None:
    """The patch set install() applies for a matrix row (None: the row refuses)."""
    row = match.row
    if row.status == UNSUPPORTED:
        return None
    if row.status == NATIVE_STATUS and not override_native:
        return patch_set(NATIVE)
    return patch_set(row.patch_set) if row.patch_set else None


def install(*, override_native: bool | None = None, automatic: bool = False) -> InstallStatus:
    """Activate the shim for the running vLLM. Idempotent and thread-safe.

    `automatic` marks calls from the plugin entry point and `molmo2_shim.auto`; only those
    honour MOLMO2_SHIM_DISABLE. `override_native` (default: MOLMO2_SHIM_OVERRIDE_NATIVE) makes
    the shim replace vLLM's own Molmo2 on versions that have one.
    """
    global _status
    with _lock:
        if _status is not None:
            return _status
        version = vllm_version()
        match = lookup(version)
        if automatic and _truthy(os.environ.get(ENV_DISABLE)):
            _status = InstallStatus(version, match.row.name, match.row.status, "disabled")
            logger.info("%s", _status)
            return _status
        if override_native is None:
            override_native = _truthy(os.environ.get(ENV_OVERRIDE_NATIVE))
        _status = _activate(match, override_native)
        logger.info("%s", _status)
        return _status


def _activate(match: VersionMatch, override_native: bool) -> InstallStatus:
    row = match.row
    chosen = active_patch_set(match, override_native)
    if row.status == UNSUPPORTED:
        raise UnsupportedVLLMVersionError(
            f"vLLM {match.raw} is not supported by molmo2-shim: {row.reason or row.notes}. "
            f"Supported: {'; '.join(supported_ranges())}.",
            version=match.raw,
            supported=supported_ranges(),
        )
    if chosen is None:
        raise UnsupportedVLLMVersionError(
            f"vLLM {match.raw} has native Molmo2 and molmo2-shim has no exact implementation for it yet; "
            "unset the override to use vLLM's own.",
            version=match.raw,
            supported=supported_ranges(),
        )
    if chosen.model is not None and match.is_prerelease:
        logger.warning("molmo2-shim: vLLM %s is a pre-release; using the %s patch set of %s", match.raw, chosen.name, row.name)
    names = _apply(chosen, match.raw)
    if chosen.model is None:
        return InstallStatus(match.raw, row.name, row.status, "stood-down", changes=tuple(names))
    return InstallStatus(
        match.raw, row.name, row.status, "installed", chosen.name,
        registered={ARCHITECTURE: MODEL_REFERENCE}, changes=tuple(names),
    )


def _apply(chosen: PatchSet, version: str) -> list[str]:
    """Apply all of a patch set's changes or none: a failure undoes the ones already applied."""
    applied: list[Undo] = []
    names: list[str] = []
    for entry in chosen.applied:
        try:
            applied.append(apply_entry(entry, _failed_at_import))
        except Exception as exc:
            for undo in reversed(applied):
                undo()
            raise PatchError(f"molmo2-shim could not apply {entry.name!r} on vLLM {version}: {exc}") from exc
        names.append(entry.name)
    _undo.extend(applied)
    return names


def _failed_at_import(module_name: str, exc: Exception) -> None:
    """A change applied when vLLM imported its module failed: remove the whole shim, loudly,
    rather than run half-patched."""
    logger.error(
        "molmo2-shim could not patch %s when it was imported (%s: %s); removing the shim so vLLM runs unpatched. "
        "Run `molmo2-shim doctor` and report this with your vLLM version.", module_name, type(exc).__name__, exc,
    )
    uninstall()


def uninstall() -> bool:
    """Undo everything install() did. Returns whether there was anything to undo."""
    global _status
    with _lock:
        if _status is None:
            return False
        while _undo:
            _undo.pop()()
        _status = None
        return True


def status() -> InstallStatus | None:
    return _status
