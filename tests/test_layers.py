"""The library's import structure: no import circle between modules (function-level imports included), and
imports point down the layers of the design (a lower layer never imports a higher one; task packages do not
import each other)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "oodlens"

#: top-level module or package -> layer (higher may import lower or equal, never higher)
LAYERS = {
    "errors": 0, "_checks": 0, "safetensors_io": 0, "data": 0,
    "metrics": 1, "features": 2, "extract": 3, "encoders": 3,
    "detectors": 4, "testing": 4, "calibrate": 5, "fusion": 6, "monitor": 7, "training": 7,
    "multimodal": 8, "detection": 8, "segmentation": 8, "scale": 9, "plots": 9, "bench": 10, "cli": 11,
    "__init__": 11, "__main__": 11,
}
TASKS = {"multimodal", "detection", "segmentation"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    full = f"{target}.{a.name}"
                    hit = full if full in mods else target if target in mods else None
                    if hit and hit != m:
                        graph[m].add(hit)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle():
    graph = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_imports_point_down_the_layers():
    graph = _imports(_modules())
    unknown = sorted({_top(m) for m in graph} - set(LAYERS))
    assert not unknown, f"give these top-level modules a layer: {unknown}"
    bad = []
    for m, targets in graph.items():
        if m == "oodlens":
            continue  # the package's own __init__ re-exports
        for t in targets:
            a, b = _top(m), _top(t)
            if t == "oodlens":
                continue
            if LAYERS[b] > LAYERS[a] or (a in TASKS and b in TASKS and a != b):
                bad.append(f"{m} -> {t}")
    assert not bad, bad
