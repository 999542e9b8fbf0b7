"""The package's import graph, read with `ast`: floors, cycles, imports that climb back up, lines per module.

    python scripts/import_graph.py [PACKAGE_DIR] [--modules]

A module's floor is 0 when it imports nothing of the package, else one more than the highest floor among the
modules it imports (imports inside functions included: they are dependencies too, only later). Modules in a
cycle share their floor. "Climbs back up" counts imports of a module of a later stage (STAGES order) by an
earlier one, e.g. `plan` importing from `pipeline`. Prints a table per stage and the totals.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

# the data flow, first to last; a module's stage is its first dotted component under the package. The run
# directory (its paths and records) sits just before the plan: the plan, the runner and the report all name its
# paths, and it imports none of them.
STAGES = ("errors", "states", "atomic", "environment", "config", "inputs", "wsclean", "rundir", "planner",
          "queue", "runtime", "reduce", "mosaic", "report", "pipeline", "testing", "api", "cli", "__main__")


def module_name(path: Path, root: Path) -> str:
    """`root/a/b.py` -> `pkg.a.b`; `root/a/__init__.py` -> `pkg.a`, with `pkg` the name of `root`."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules `path` imports (absolute or relative; `from pkg import mod` resolved to `pkg.mod`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` depends on pkg.mod (importing it runs pkg/__init__ first, but that is
            # the package's own business); `from mod import name` depends on mod
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = subs if len(subs) == len(node.names) else [*subs, base]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def stage_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the cycles are the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
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
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def floors(graph: dict[str, set[str]], components: list[list[str]]) -> dict[str, int]:
    comp_of = {m: i for i, c in enumerate(components) for m in c}
    memo: dict[int, int] = {}

    def floor(ci: int) -> int:
        if ci not in memo:
            memo[ci] = 0
            deps = {comp_of[d] for m in components[ci] for d in graph[m]} - {ci}
            memo[ci] = 1 + max((floor(d) for d in deps), default=-1)
        return memo[ci]

    sys.setrecursionlimit(10_000)
    return {m: floor(comp_of[m]) for m in graph}


def main(argv: list[str] | None = None) -> int:
    """Print the import graph's summary of the package at `PACKAGE_DIR` (default: ./mpimager)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default="mpimager")
    ap.add_argument("--modules", action="store_true", help="one line per module (floor, lines, imports)")
    args = ap.parse_args(argv)
    root = Path(args.package).resolve()
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph = {m: imports_of(p, m, modules) for m, p in files.items()}
    comps = strongly_connected(graph)
    cycles = [c for c in comps if len(c) > 1]
    floor = floors(graph, comps)
    rank = {s: i for i, s in enumerate(STAGES)}
    climbs = sorted((m, d) for m, deps in graph.items() for d in deps
                    if rank.get(stage_of(d), -1) > rank.get(stage_of(m), len(STAGES)))
    lines = {m: len(p.read_text().splitlines()) for m, p in files.items()}
    by_stage: dict[str, list[str]] = defaultdict(list)
    for m in modules:
        by_stage[stage_of(m)].append(m)
    print(f"{'stage':<12} {'modules':>7} {'lines':>6} {'max lines':>9} {'floors':>7}")
    for stage in sorted(by_stage, key=lambda s: rank.get(s, -1)):
        ms = by_stage[stage]
        fl = sorted({floor[m] for m in ms})
        print(f"{stage:<12} {len(ms):>7} {sum(lines[m] for m in ms):>6} {max(lines[m] for m in ms):>9} "
              f"{fl[0]}-{fl[-1]:<5}")
    print(f"\n{len(modules)} modules, {sum(lines.values())} lines, {max(floor.values()) + 1} floors, "
          f"{len(cycles)} cycles, {len(climbs)} imports climbing back up the data flow")
    for c in cycles:
        print("cycle: " + " <-> ".join(c))
    for m, d in climbs:
        print(f"climbs: {m} -> {d}")
    if args.modules:
        for m in sorted(modules, key=lambda m: (floor[m], m)):
            print(f"{floor[m]:>3} {lines[m]:>5} {m}: {', '.join(sorted(graph[m])) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
