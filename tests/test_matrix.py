"""compat_matrix.yaml parsing and version lookup (no vLLM needed)."""

from __future__ import annotations

import pytest

from molmo2_shim.activation.matrix import NATIVE, SUPPORTED, UNSUPPORTED, load_matrix, lookup
from molmo2_shim.errors import InvalidVLLMVersionError, UnsupportedVLLMVersionError

SUPPORTED_CASES = {
    "0.11.0": "0.11.0",
    "0.11.0rc1": "0.11.0",
    "0.11.0+cpu": "0.11.0",
    "0.11.1": "0.11.1",
    "0.11.1.post2": "0.11.1",
    "0.11.2": "0.11.2",
    "0.11.2.post2": "0.11.2",
    "0.11.2+cpu": "0.11.2",
    "0.11.2.post2+cu128": "0.11.2",
    "0.11.2.dev5+gabcdef": "0.11.2",
    " 0.11.2 ": "0.11.2",
}


@pytest.mark.parametrize("raw,row", sorted(SUPPORTED_CASES.items()))
def test_supported_versions_map_to_their_row(raw, row):
    match = lookup(raw)
    assert match.row.name == row
    assert match.row.status == SUPPORTED
    assert match.row.patch_set


def test_prerelease_is_flagged():
    assert lookup("0.11.0rc1").is_prerelease
    assert lookup("0.11.2.dev5+gabcdef").is_prerelease
    assert not lookup("0.11.2.post2").is_prerelease


@pytest.mark.parametrize("raw", ["0.9.2", "0.10.1", "0.8.5.post1", "0.0.1"])
def test_versions_below_every_row_raise_a_typed_error_naming_what_is_supported(raw):
    with pytest.raises(UnsupportedVLLMVersionError) as exc:
        lookup(raw)
    assert exc.value.version == raw.strip()
    assert any("0.11.2" in s for s in exc.value.supported)
    assert "0.11.2" in str(exc.value)


def test_unsupported_row_is_found_with_its_reason():
    match = lookup("0.10.2")
    assert match.row.status == UNSUPPORTED
    assert match.row.reason


@pytest.mark.parametrize("raw", ["garbage", "", "v0.11.x", "latest", "1.2.3.4.5-beta?"])
def test_garbage_versions_raise_invalid_version(raw):
    with pytest.raises(InvalidVLLMVersionError):
        lookup(raw)


def test_every_row_is_well_formed():
    rows = load_matrix()
    names = [r.name for r in rows]
    assert len(names) == len(set(names))
    for row in rows:
        assert row.status in (SUPPORTED, NATIVE, UNSUPPORTED)
        if row.status == SUPPORTED:
            assert row.patch_set and row.tested, row.name
        if row.status == UNSUPPORTED:
            assert row.reason, row.name
        for version in row.tested:
            assert lookup(version).row.name == row.name


def test_every_patch_set_named_in_the_matrix_exists():
    import ast
    import importlib.util
    from pathlib import Path

    from molmo2_shim.patches.catalog import patch_set

    for row in load_matrix():
        if row.patch_set:
            model_module, _, model_class = patch_set(row.patch_set).model.partition(":")
            spec = importlib.util.find_spec(model_module)
            assert spec is not None and spec.origin, row.patch_set
            defined = {n.name for n in ast.parse(Path(spec.origin).read_text()).body if isinstance(n, ast.ClassDef)}
            assert model_class in defined, row.patch_set
