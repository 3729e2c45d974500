"""Reversible changes to vLLM: catalog entries applied when their module is imported.

install() hands each `wrap` / `registry` entry of the row's patch set to `apply_entry` and
keeps the undo. A change is applied when vLLM imports the target's module (at once if it
already has), so install() itself imports nothing heavy, and processes that never load a
module (the API server never loads the scheduler) never pay for it.

Only wrapt's public API is used: `register_post_import_hook`, `resolve_path`, `apply_patch`,
`FunctionWrapper`. wrapt cannot unregister a post-import hook, so each module gets one hook
for the life of the process, which dispatches to the changes pending for it at that moment.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import wrapt

Undo = Callable[[], None]
Change = Callable[[Any], Undo]  # module -> undo
FailureHandler = Callable[[str, Exception], None]

_lock = threading.RLock()
_pending: dict[str, list[_Pending]] = {}  # module name -> changes waiting for its import
_hooked: set[str] = set()  # modules whose post-import hook is registered


class _Pending:
    def __init__(self, change: Change, on_failure: FailureHandler) -> None:
        self.change = change
        self.on_failure = on_failure
        self.undo: Undo | None = None
        self.cancelled = False


def _dispatch(module: Any) -> None:
    with _lock:
        waiting = _pending.pop(module.__name__, [])
    for item in waiting:
        if item.cancelled:
            continue
        try:
            item.undo = item.change(module)
        except Exception as exc:  # reported to install()'s owner, which removes the shim
            item.on_failure(module.__name__, exc)


def when_imported(module_name: str, change: Change, on_failure: FailureHandler) -> Undo:
    """Run `change(module)` when `module_name` is imported (now, if it is); return an undo
    that reverts it, or cancels it if the module was never imported.

    A change applied now raises as usual; one applied at a later import reports to
    `on_failure(module_name, exc)` (an import hook has nobody to raise to).
    """
    item = _Pending(change, on_failure)
    with _lock:
        module = sys.modules.get(module_name)
        if module is None:
            _pending.setdefault(module_name, []).append(item)
            if module_name not in _hooked:
                _hooked.add(module_name)
                wrapt.register_post_import_hook(_dispatch, module_name)
    if module is not None:
        item.undo = change(module)

    def undo() -> None:
        with _lock:
            item.cancelled = True
            waiting = _pending.get(module_name)
            if waiting and item in waiting:
                waiting.remove(item)
            revert, item.undo = item.undo, None
        if revert is not None:
            revert()

    return undo


def wrap_function(attribute: str, wrapper: Callable[..., Any]) -> Change:
    """A change that wraps `module.<attribute>` ("Class.method" allowed) with a wrapt wrapper."""

    def change(module: Any) -> Undo:
        parent, name, original = wrapt.resolve_path(module, attribute)
        wrapt.apply_patch(parent, name, wrapt.FunctionWrapper(original, wrapper))

        def undo() -> None:
            wrapt.apply_patch(parent, name, original)

        return undo

    return change


def apply_entry(entry: Any, on_failure: FailureHandler) -> Undo:
    """Apply one `wrap` or `registry` entry of the patch catalog."""
    if entry.kind == "wrap":
        return when_imported(entry.module, wrap_function(entry.attribute, entry.apply), on_failure)
    if entry.kind == "registry":
        return when_imported(entry.module, entry.apply, on_failure)
    raise ValueError(f"catalog entry {entry.name!r} of kind {entry.kind!r} is not applied by install()")
