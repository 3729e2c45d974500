"""Reversible changes to vLLM: wrapt function wrappers and registry entries.

install() applies a patch set's changes in order and keeps the undo of each; a failure rolls
back what was applied, and uninstall() undoes everything in reverse order.
"""

from __future__ import annotations

import importlib
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

    `wrapper(wrapped, instance, args, kwargs)` is a wrapt wrapper. The docstrings of the
    per-version patch modules say why each exists and when it can be removed.
    """

    name: str
    module: str
    attribute: str
    wrapper: Callable[..., Any]

    def apply(self) -> Undo:
        parent, attr, original = wrapt.resolve_path(importlib.import_module(self.module), self.attribute)
        wrapt.apply_patch(parent, attr, wrapt.FunctionWrapper(original, self.wrapper))

        def undo() -> None:
            wrapt.apply_patch(parent, attr, original)

        return undo


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
