"""Reversible changes to vLLM: wrapt function wrappers and registry entries.

install() applies a patch set's changes in order and keeps the undo of each; a failure rolls
back what was applied, and uninstall() undoes everything in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import wrapt

Undo = Callable[[], None]


class Change(Protocol):
    name: str

    def apply(self) -> Undo: ...


@dataclass(frozen=True)
class Patch:
    """Wrap `module.attribute` (dotted inside the module, e.g. "Class.method") with wrapt.

    `wrapper(wrapped, instance, args, kwargs)` is a wrapt wrapper. The patch is applied when
    vLLM imports `module` (at once if it already has): install() itself imports nothing,
    and processes that never load the module (the API server never loads the scheduler)
    never pay for it. The docstrings of the per-version patch modules say why each exists
    and when it can be removed.
    """

    name: str
    module: str
    attribute: str
    wrapper: Callable[..., Any]

    def apply(self) -> Undo:
        return when_imported(self.module, self._wrap)

    def _wrap(self, module: Any) -> Undo:
        parent, attr, original = wrapt.resolve_path(module, self.attribute)
        wrapt.apply_patch(parent, attr, wrapt.FunctionWrapper(original, self.wrapper))

        def undo() -> None:
            wrapt.apply_patch(parent, attr, original)

        return undo


class DeferredFailure(RuntimeError):
    """A change applied at a module's import time failed; the shim then removed itself."""


def when_imported(module_name: str, change: Callable[[Any], Undo]) -> Undo:
    """Run `change(module)` when `module_name` is imported (now, if it is); return an undo
    that reverts it, or cancels it if the module was never imported."""
    import sys

    import wrapt.importer as importer

    state: dict[str, Any] = {"undo": None, "cancelled": False}

    def hook(module: Any) -> None:
        if state["cancelled"]:
            return
        try:
            state["undo"] = change(module)
        except Exception as exc:
            _deferred_failed(module_name, exc)

    if module_name in sys.modules:
        state["undo"] = change(sys.modules[module_name])  # fail loudly inside install()
    else:
        wrapt.register_post_import_hook(hook, module_name)

    def undo() -> None:
        state["cancelled"] = True
        with importer._post_import_hooks_lock:
            hooks = importer._post_import_hooks.get(module_name)
            if hooks and hook in hooks:
                hooks.remove(hook)
        if state["undo"] is not None:
            state["undo"]()
            state["undo"] = None

    return undo


def _deferred_failed(module_name: str, exc: Exception) -> None:
    import logging

    from .installer import uninstall

    logging.getLogger("molmo2_shim").error(
        "molmo2-shim could not patch %s when it was imported (%s: %s); removing the shim so vLLM runs unpatched. "
        "Run `molmo2-shim doctor` and report this with your vLLM version.", module_name, type(exc).__name__, exc,
    )
    uninstall()


_MISSING = object()


@dataclass(frozen=True)
class MappingEntry:
    """Set `mapping[key] = value` on a dict-like registry, restoring the old entry on undo."""

    name: str
    get_mapping: Callable[[], Any]
    key: Any
    value: Callable[[], Any]

    def apply(self) -> Undo:
        mapping = self.get_mapping()
        previous = mapping.get(self.key, _MISSING) if hasattr(mapping, "get") else _MISSING
        mapping[self.key] = self.value()

        def undo() -> None:
            if previous is _MISSING:
                mapping.pop(self.key, None)
            else:
                mapping[self.key] = previous

        return undo


@dataclass(frozen=True)
class Action:
    """Anything else: `do()` performs it and returns its own undo."""

    name: str
    do: Callable[[], Undo]

    def apply(self) -> Undo:
        return self.do()
