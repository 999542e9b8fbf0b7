"""Print pyproject.toml's dependencies pinned to their declared lowest versions (`name>=X` -> `name==X`).

`python3 scripts/floors.py [EXTRA...]` prints one requirement per line for `pip install -r /dev/stdin`: the
core dependencies and those of each EXTRA named, environment markers kept. A dependency without a floor is
printed as it is. scripts/test.sh installs these into a fresh venv to prove the floors install and pass.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_FLOOR = re.compile(r"^(?P<name>[A-Za-z0-9_.\-\[\]]+)\s*>=\s*(?P<version>[^,;\s]+)(?P<rest>[^;]*)(?P<marker>;.*)?$")


def pinned(requirement: str) -> str:
    """`name>=X[,<Y][; marker]` -> `name==X[; marker]`; anything else unchanged."""
    m = _FLOOR.match(requirement.strip())
    if not m:
        return requirement
    return f"{m['name']}=={m['version']}{m['marker'] or ''}"


def main(extras: list[str]) -> int:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(pinned(r) for r in requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
