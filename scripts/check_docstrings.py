"""Public functions document their parameters: list every public function or method of the package whose
docstring is missing or does not name each of its parameters. Exit 1 when any is found.

Public: not underscored, in a module whose name is not underscored, at module level or in a public class.
A parameter is documented when its name appears in the docstring as a word (`name`, name:, a numpydoc
`Parameters` entry all count); `self`, `cls` and `*args`/`**kwargs` named `args`/`kwargs` are exempt.

    python scripts/check_docstrings.py [PACKAGE_DIR]     # default: mpimager/ beside this script
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

EXEMPT = {"self", "cls", "args", "kwargs"}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in EXEMPT and not n.startswith("_")]


def _functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def problems(package: Path) -> list[str]:
    """Every public function of the modules under `package` whose docstring misses one of its parameters."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(package).parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for name, fn in _functions(tree):
            if name.rsplit(".", 1)[-1].startswith("_"):
                continue
            if any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                continue
            doc = ast.get_docstring(fn) or ""
            missing = [p for p in _params(fn) if not re.search(rf"\b{re.escape(p)}\b", doc)]
            if not doc or missing:
                what = "no docstring" if not doc else "does not name " + ", ".join(missing)
                found.append(f"{path}:{fn.lineno}: {name}: {what}")
    return found


def main(argv: list[str]) -> int:
    package = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "mpimager"
    found = problems(package)
    for line in found:
        print(line)
    print(f"{len(found)} public functions with undocumented parameters", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
