"""Which products of a run the report looks at: MFS images, cubes, and the side files of each cube.

Pure names-and-paths logic (plus `existing` side files). Products are the outputs the journal recorded
for jobs that ended well (this run or, for jobs skipped as done, an earlier one), else the manifest's list.
- An MFS image is a WSClean `*-image.fits` that is not one channel of several: `PREFIX-MFS-image.fits`,
  `PREFIX-MFS-Q-image.fits`, or `PREFIX-image.fits` / `PREFIX-Q-image.fits` of a single-channel job; or a
  mosaic's `NAME.mosaic.mfs.fits` (drawn with its beam centres).
- A cube is a `.fits` output of a `reduce` job, or any output named `*.cube.fits` or Arrakis' `*.conv.fits`.
- A cube's beam log and weights sit beside it (their names: mpimager.planner.products.side_file_candidates).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpimager.planner.products import is_mosaic_mfs, side_file_candidates
from mpimager.rundir import layout
from mpimager.wsclean.names import parse_image_name


@dataclass(frozen=True)
class Cube:
    path: str
    beamlog: str | None
    weights: str | None


def _is_mfs_image(path: str) -> bool:
    """Whether `path` names an MFS image (see the module docstring)."""
    name = os.path.basename(path)
    if is_mosaic_mfs(name):
        return True
    n = parse_image_name(name)
    return n.chan is None and n.kind == "image" and not n.pb if n else name.endswith("-image.fits")


def _is_cube_name(path: str) -> bool:
    """Whether `path` is named as a cube: `*.cube.fits` (mpimager) or `*.conv.fits` (Arrakis)."""
    name = os.path.basename(path)
    return name.endswith(".cube.fits") or name.endswith(".conv.fits")


def find_side_files(cube: str) -> Cube:
    """The `Cube` at `cube` with the first beam log and weights file that exist of those that may sit beside it
    (mpimager.planner.products.side_file_candidates, earlier versions' beam logs too; None for each not found)."""
    beamlogs, weights = side_file_candidates(Path(cube), earlier=True)
    return Cube(cube, next((str(p) for p in beamlogs if p.is_file()), None),
                next((str(p) for p in weights if p.is_file()), None))


def select(outputs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(MFS images, cubes) among the (job kind, output path) pairs of `outputs`, in order, each once."""
    images, cubes, seen = [], [], set()
    for kind, path in outputs:
        if path in seen or not path.endswith(".fits"):
            continue
        seen.add(path)
        if kind == "reduce" or _is_cube_name(path):
            cubes.append(path)
        elif _is_mfs_image(path):
            images.append(path)
    return images, cubes


def run_outputs(jobs: Sequence, run_dir: Path) -> list[tuple[str, str]]:
    """(kind, path) of every output the journal recorded for the finished (done or skipped) `jobs`; the
    products of the manifest in `run_dir` (kind unknown: "") when the journal recorded none."""
    pairs = [(j.kind, p) for j in jobs if j.state in ("done", "skipped") for p in j.outputs]
    if pairs:
        return pairs
    try:
        manifest = json.loads((Path(run_dir) / layout.MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    return [("", p) for p in manifest.get("products", ())]
