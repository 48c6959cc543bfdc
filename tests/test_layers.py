"""The layers of docs/architecture.md, checked on every module's import statements (lazy ones
included): each import points down or sideways, and no modules or packages import each other
in a circle.  Read from the source (ast), so nothing is imported and it runs in well under a
second."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "traces", "policies", "scenarios")
ALIAS_MARKER = "clearsim-deprecated-alias"

# --- layers (relayout.py rewrites this block) ---
LAYERS = {  # bottom first: a module may import its own layer and the layers before it
    "foundation": ["sim.foundation", "scenarios"],   # scenarios/: YAML only
    "traces": ["traces"],
    "policies": ["policies"],
    "core": ["sim.core"],
    "experiments": ["sim.experiments"],
}
#: modules outside those packages: the root package (imports nothing) and ``python -m sim``
EXACT = {"sim": "foundation", "sim.__main__": "experiments"}
PLACE: dict[str, str] = {}  # every module sits in its layer's package
# --- end layers ---
ORDER = list(LAYERS)


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the packages (deprecated aliases left out)."""
    out = {}
    for top in PACKAGES:
        for p in sorted((ROOT / top).rglob("*.py")):
            rel = p.relative_to(ROOT)
            if not all((ROOT.joinpath(*rel.parts[:i]) / "__init__.py").exists()
                       for i in range(1, len(rel.parts))):
                continue                                  # a script in a data folder
            if ALIAS_MARKER in p.read_text(encoding="utf-8"):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from m import name`` counts as m.name when
    that is a module)."""
    graph = {}
    for name, path in mods.items():
        ispkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if ispkg else name.split(".")[:-1]
                    base = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".")
                else:
                    base = node.module
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def target(name: str) -> str:
    """Where a module sits in the layers (its name after relayout.py, if it has not run)."""
    for old in sorted(PLACE, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return PLACE[old] + name[len(old):]
    return name


def layer(name: str) -> str | None:
    t = target(name)
    if t in EXACT:
        return EXACT[t]
    best = None
    for lay, prefixes in LAYERS.items():
        for p in prefixes:
            if (t == p or t.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (lay, p)
    return best and best[0]


def package(name: str, mods: dict[str, Path]) -> str:
    t = target(name)
    if t.endswith(".__main__"):
        return t                # an entry point (python -m ...) is a unit of its own
    return t if mods[name].name == "__init__.py" else t.rpartition(".")[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


MODS = modules()
GRAPH = import_graph(MODS)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_every_module_has_a_layer():
    assert len(MODS) > 50
    missing = sorted(m for m in MODS if layer(m) is None)
    assert not missing, (f"{missing}: outside the layers; put each in sim/foundation, sim/core or "
                         "sim/experiments (docs/architecture.md)")


def test_imports_point_down_the_layers():
    up = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, deps in GRAPH.items() for b in deps
          if ORDER.index(layer(b)) > ORDER.index(layer(a))]
    assert not up, "upward imports (docs/architecture.md, Layers):\n" + "\n".join(sorted(up))


def test_the_root_package_imports_nothing():
    # `import sim.foundation.errors` runs sim/__init__.py first: it must stay empty of imports,
    # or traces/ and policies/ standing on the foundation would pull in the whole simulator
    assert GRAPH["sim"] == set()


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    pkgs: dict[str, set[str]] = {}
    for a, deps in GRAPH.items():
        pa = package(a, MODS)
        pkgs.setdefault(pa, set()).update(package(b, MODS) for b in deps if package(b, MODS) != pa)
    assert len(pkgs) >= 5
    assert cycles(pkgs) == []


def test_deprecated_aliases_warn_once_and_are_the_new_module():
    aliases = {}
    for top in PACKAGES:
        for p in (ROOT / top).rglob("*.py"):
            text = p.read_text(encoding="utf-8")
            if ALIAS_MARKER in text and not p.name == "__main__.py":
                parts = list(p.relative_to(ROOT).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                new = text.split('alias(__name__, "', 1)[1].split('"', 1)[0]
                aliases[".".join(parts)] = new
    if not aliases:
        pytest.skip("no deprecated aliases in this tree (relayout.py has not run)")
    code = f"""
import importlib, sys, warnings
for old, new in {sorted(aliases.items())!r}:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
        importlib.import_module(old)
    assert mod is importlib.import_module(new) is sys.modules[old], old
    dep = [x for x in w if issubclass(x.category, DeprecationWarning) and old in str(x.message)]
    assert len(dep) == 1 and new in str(dep[0].message), (old, [str(x.message) for x in w])
print({len(aliases)})
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == str(len(aliases))
