"""compat_matrix.yaml: parsing and version lookup (no vLLM import here).

The file sits at the top of the repository next to patches/ and is installed next to the
package's `patches` subpackage (package data of molmo2_shim.patches, one level up), so
`patches/../compat_matrix.yaml` finds it in a checkout, an editable install and a wheel alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..errors import InvalidVLLMVersionError, UnsupportedVLLMVersionError

SUPPORTED = "supported"
NATIVE = "native"
UNSUPPORTED = "unsupported"
STATUSES = (SUPPORTED, NATIVE, UNSUPPORTED)


@dataclass(frozen=True)
class MatrixRow:
    name: str
    range: SpecifierSet
    status: str
    patch_set: str | None
    tested: tuple[str, ...]
    requires: dict[str, str]
    ci: dict[str, Any]
    notes: str
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def covers(self, version: Version) -> bool:
        return self.range.contains(release_of(version), prereleases=True)


@dataclass(frozen=True)
class VersionMatch:
    row: MatrixRow
    version: Version
    raw: str

    @property
    def is_prerelease(self) -> bool:
        return self.version.is_prerelease or self.version.is_devrelease


def release_of(version: Version) -> Version:
    """The release a build belongs to: 0.11.2.post2+cpu -> 0.11.2, 0.11.1.dev7 -> 0.11.1.

    Pre-releases and dev builds are matched by the release they lead up to, because their
    model API is that release's; local tags (+cpu, +cu128) never matter.
    """
    return Version(version.base_version)


def parse_version(raw: str) -> Version:
    try:
        return Version(str(raw).strip())
    except InvalidVersion as exc:
        raise InvalidVLLMVersionError(
            f"vllm.__version__ is {raw!r}, which is not a version molmo2-shim can read. "
            "Reinstall vLLM from a release wheel or set it to a PEP 440 version.",
            version=str(raw),
            supported=supported_ranges(),
        ) from exc


def _matrix_text(path: Path | None) -> str:
    if path is not None:
        return Path(path).read_text()
    return resources.files("molmo2_shim.patches").joinpath("..", "compat_matrix.yaml").read_text()


def _row(raw: dict[str, Any]) -> MatrixRow:
    status = raw["status"]
    if status not in STATUSES:
        raise ValueError(f"compat_matrix.yaml row {raw.get('name')!r}: unknown status {status!r}")
    if status == SUPPORTED and not raw.get("patch_set"):
        raise ValueError(f"compat_matrix.yaml row {raw['name']!r} is supported but names no patch_set")
    known = {"name", "range", "status", "patch_set", "tested", "requires", "ci", "notes", "reason"}
    return MatrixRow(
        name=str(raw["name"]),
        range=SpecifierSet(raw["range"]),
        status=status,
        patch_set=raw.get("patch_set"),
        tested=tuple(str(v) for v in raw.get("tested", [])),
        requires=dict(raw.get("requires", {})),
        ci=dict(raw.get("ci", {})),
        notes=" ".join(str(raw.get("notes", "")).split()),
        reason=" ".join(str(raw["reason"]).split()) if raw.get("reason") else None,
        extra={k: v for k, v in raw.items() if k not in known},
    )


@functools.lru_cache(maxsize=4)
def load_matrix(path: Path | None = None) -> tuple[MatrixRow, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has it
    rows = tuple(_row(r) for r in yaml.load(_matrix_text(path), Loader=loader)["rows"])
    probes = [Version(t) for r in rows for t in r.tested]
    for probe in probes:
        owners = [r.name for r in rows if r.covers(probe)]
        if len(owners) != 1:
            raise ValueError(f"compat_matrix.yaml: version {probe} is covered by rows {owners}")
    return rows


def supported_ranges(rows: tuple[MatrixRow, ...] | None = None) -> list[str]:
    rows = rows if rows is not None else load_matrix()
    return [f"{r.range} ({r.status})" for r in rows if r.status != UNSUPPORTED]


def lookup(raw_version: str, rows: tuple[MatrixRow, ...] | None = None) -> VersionMatch:
    """The matrix row for a vLLM version string, or a typed error naming what is supported."""
    rows = rows if rows is not None else load_matrix()
    version = parse_version(raw_version)
    for row in rows:
        if row.covers(version):
            return VersionMatch(row=row, version=version, raw=str(raw_version))
    ranges = "; ".join(supported_ranges(rows))
    raise UnsupportedVLLMVersionError(
        f"vLLM {raw_version} is not covered by molmo2-shim's compat matrix. "
        f"Supported: {ranges}. Install one of those vLLM versions "
        "(pip install 'vllm==0.11.2'), or use vLLM >= 0.15, which has Molmo2 built in.",
        version=str(raw_version),
        supported=supported_ranges(rows),
    )
