"""The package's layers, as docs/design.md describes them: imports (lazy ones included) only
point down, and nothing imports in a circle.

    entry points   molmo2_shim/__init__, auto, plugin, cli, registered_model, verl
    diagnostics    molmo2_shim/diagnostics
    activation     molmo2_shim/activation       (no torch, no vLLM at import)
    patches        patches/ = molmo2_shim.patches (per-version adapters, the catalog)
    model          molmo2_shim/model            (the math, on vLLM's layers)
    engine         molmo2_shim/engine           (vLLM glue shared by every version)
    processing     molmo2_shim/processing       (the original's processor and config; no vLLM)
    errors         molmo2_shim/errors
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["errors", "processing", "engine", "model", "patches", "activation", "diagnostics", "entry"]
ENTRY_MODULES = {"molmo2_shim", "molmo2_shim.__main__", "molmo2_shim.auto", "molmo2_shim.plugin", "molmo2_shim.cli",
                 "molmo2_shim.registered_model", "molmo2_shim.verl"}


def _modules() -> dict[str, Path]:
    found = {}
    for root, package in ((REPO / "molmo2_shim", "molmo2_shim"), (REPO / "patches", "molmo2_shim.patches")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer_of(module: str) -> str:
    if module in ENTRY_MODULES or module.startswith("molmo2_shim.verl."):
        return "entry"
    part = module.split(".")[1]
    return part if part in LAYERS else "entry"


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every molmo2_shim module `module` imports, at the top or inside functions."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("molmo2_shim"):
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: {d for d in _imports(m, p, known) if not m.startswith(d + ".")} for m, p in modules.items()}


def test_imports_only_point_down_the_layers():
    wrong = []
    for module, deps in graph().items():
        for dep in deps:
            if dep == "molmo2_shim":  # the package itself: its __init__ re-exports the public API
                wrong.append(f"{module} -> {dep} (import the defining module instead)")
            elif LAYERS.index(layer_of(dep)) > LAYERS.index(layer_of(module)):
                wrong.append(f"{module} ({layer_of(module)}) -> {dep} ({layer_of(dep)})")
    assert not wrong, "imports that point up a layer:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_activation_and_catalog_import_neither_torch_nor_vllm():
    code = ("import sys, molmo2_shim.activation.installer, molmo2_shim.patches.catalog, molmo2_shim.diagnostics.doctor; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_package_folder_is_packaged():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert listed == on_disk
