"""The patch catalog: one list of every place the shim touches vLLM, true on every version.

The unit checks run without vLLM; `test_every_target_exists_in_this_vllm` runs in each
compat-matrix row's environment and resolves the target of every entry whose patch set
serves that vLLM (the row's default set, and the opt-in override where the row has one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from molmo2_shim.activation.matrix import NATIVE, UNSUPPORTED, load_matrix, lookup
from molmo2_shim.patches import catalog

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_generated_from_the_catalog():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "patch_catalog.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_entry_is_complete():
    names = [e.name for e in catalog.CATALOG]
    assert len(names) == len(set(names)), "entry names must be unique"
    for e in catalog.CATALOG:
        assert e.kind in (catalog.WRAP, catalog.REGISTRY, catalog.OVERRIDE, catalog.ATTRIBUTE, catalog.INTERNAL), e.name
        assert e.patch_sets and set(e.patch_sets) <= set(catalog.PATCH_SETS), e.name
        assert e.why and e.upstream and e.remove_when, e.name
        assert (e.apply is not None) == (e.kind in catalog.APPLIED_KINDS), e.name
        if e.kind == catalog.WRAP:
            assert e.attribute, f"{e.name}: a wrapped function needs module:attribute"


def test_every_matrix_row_maps_to_a_catalog_patch_set():
    for row in load_matrix():
        if row.status == UNSUPPORTED:
            continue
        if row.patch_set:
            assert catalog.patch_set(row.patch_set).model, row.name
        if row.status == NATIVE:
            assert catalog.patch_set(catalog.NATIVE).applied, row.name


def test_the_design_card_patch_points_are_named():
    """The three patch points of the design card can be found without grep."""
    targets = {e.target.rsplit(".", 1)[-1] for e in catalog.CATALOG}
    assert {"_hf_processor_applies_updates", "merge_by_field_config"} <= targets
    assert any("PromptIndexTargets.start()" in e.name and e.attribute.endswith(".apply") for e in catalog.CATALOG)


def _sets_for_running_vllm() -> list[str]:
    import vllm

    row = lookup(vllm.__version__).row
    sets = [catalog.NATIVE] if row.status == NATIVE else []
    if row.patch_set:
        sets.append(row.patch_set)
    return sets


@pytest.mark.engine
@pytest.mark.row_subset
@pytest.mark.native
def test_every_target_exists_in_this_vllm():
    sets = _sets_for_running_vllm()
    assert sets, "a supported or native row serves at least one patch set"
    missing = []
    checked = 0
    for entry in catalog.CATALOG:
        if not set(entry.patch_sets) & set(sets):
            continue
        checked += 1
        try:
            catalog.resolve(entry.target)
        except Exception as exc:  # noqa: BLE001 - every kind of failure is a missing target
            missing.append(f"{entry.name}: {entry.target} ({type(exc).__name__}: {exc})")
    # Every patch set touches several places: the registries alone (3 entries) where vLLM
    # serves Molmo2 itself, more wherever the shim serves the model.
    assert checked >= (3 if sets == [catalog.NATIVE] else 5), sets
    assert not missing, "\n".join(missing)


@pytest.mark.engine
@pytest.mark.row_subset
@pytest.mark.native
def test_doctor_lists_the_active_entries():
    import json

    env = {k: v for k, v in __import__("os").environ.items() if k != "MOLMO2_SHIM_OVERRIDE_NATIVE"}
    proc = subprocess.run([sys.executable, "-m", "molmo2_shim", "--json", "doctor", "--no-child"],
                          capture_output=True, text=True, timeout=600, env=env)
    checks = json.loads(proc.stdout)["checks"]
    details = "\n".join(c["detail"] for c in checks)
    chosen = catalog.patch_set(_sets_for_running_vllm()[0])
    assert f"{chosen.name}:" in details
    for entry in chosen.entries:
        assert f"{entry.name}: {entry.target}" in details, entry.name
    failing = [c["detail"] for c in checks if c["name"].strip() in (catalog.WRAP, catalog.REGISTRY) and c["ok"] is False]
    assert not failing
