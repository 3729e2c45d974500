"""patches/README.md, generated from the patch catalog (molmo2_shim.patches.catalog).

    python tools/patch_catalog.py            print it
    python tools/patch_catalog.py --write    rewrite patches/README.md
    python tools/patch_catalog.py --check    exit 1 if patches/README.md is out of date

Runs with the package importable (any test environment, or the unit environment CI builds).
"""

from __future__ import annotations

import sys
from pathlib import Path

from molmo2_shim.activation.matrix import NATIVE, load_matrix
from molmo2_shim.patches.catalog import CATALOG, PATCH_SETS
from molmo2_shim.patches.catalog import NATIVE as NATIVE_SET

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "patches" / "README.md"

KIND_TITLES = {
    "wrap": "Wrapped vLLM functions (applied by install(), undone by uninstall())",
    "registry": "Registry entries (applied by install(), undone by uninstall())",
    "override": "Methods the shim's classes override on vLLM base classes",
    "attribute": "Class attributes vLLM reads from the shim's model",
    "internal": "vLLM internals the shim reads or changes (no public API for them)",
}


def versions_of(patch_set: str) -> str:
    """The compat-matrix rows a patch set serves, e.g. `0.11.1`, `0.11.2`, `0.12.0`."""
    names = []
    for row in load_matrix():
        if patch_set == NATIVE_SET and row.status == NATIVE:
            names.append(row.name)
        elif row.patch_set == patch_set:
            names.append(row.name + (" (opt-in override)" if row.status == NATIVE else ""))
    return ", ".join(f"`{n}`" for n in names) or "no matrix row"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    out = [
        "# The patch catalog: every place molmo2-shim touches vLLM",
        "",
        "Generated from `patches/catalog.py` by `python tools/patch_catalog.py --write`; "
        "`tests/test_catalog.py` checks that this page is current and that every target exists in every "
        "vLLM version its patch sets serve. `molmo2-shim doctor` lists the entries active for the running vLLM.",
        "",
        "## Patch sets",
        "",
        "| patch set | compat_matrix.yaml rows | API generation | model class |",
        "|---|---|---|---|",
    ]
    for ps in PATCH_SETS.values():
        model = f"`{ps.model}`" if ps.model else "none (vLLM's own)"
        out.append(f"| `{ps.name}` | {versions_of(ps.name)} | {_cell(ps.api)} | {model} |")
    for kind, title in KIND_TITLES.items():
        entries = [e for e in CATALOG if e.kind == kind]
        if not entries:
            continue
        out += ["", f"## {title}", ""]
        for e in entries:
            out += [
                f"### {e.name}",
                "",
                f"- target: `{e.target}`",
                f"- patch sets: {', '.join(f'`{s}`' for s in e.patch_sets)}",
                f"- why: {_cell(e.why)}",
                f"- unnecessary once: {_cell(e.upstream)}",
                f"- remove when: {_cell(e.remove_when)}",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        TARGET.write_text(text)
        return 0
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print("patches/README.md is out of date: run `python tools/patch_catalog.py --write`")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
