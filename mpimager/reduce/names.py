"""Where a cube and its side files go: pure naming, light to import (the run's planner uses it).

mpimager names: PREFIX-S-KIND.cube.fits with .beamlog.txt and .weights.txt beside it; Arrakis names
(`names = "arrakis"`, for a prefix image.REST): image.restored.s.REST.conv.fits,
beamlog.image.restored.s.REST.conv.txt and weights.restored.s.REST.conv.txt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mpimager.reduce.options import ReduceOptions


@dataclass(frozen=True)
class CubePaths:
    cube: Path
    beamlog: Path
    weights: Path

    @property
    def partial(self) -> Path:
        return self.cube.with_name(f".{self.cube.name}.partial")


def cube_paths(plan, options: ReduceOptions, out_dir: Path, out_file: Path | None = None) -> CubePaths:
    """Where a cube and its side files go; `plan` needs .prefix, .stokes and .kind (a CubePlan or alike)."""
    if out_file is not None:
        stem = out_file.name[:-5] if out_file.name.endswith(".fits") else out_file.name
        return CubePaths(out_file, out_file.with_name(f"{stem}.beamlog.txt"),
                         out_file.with_name(f"{stem}.weights.txt"))
    if options.names == "arrakis":
        kind = "residual" if plan.kind == "residual" else "restored"
        rest = plan.prefix[len("image."):] if plan.prefix.startswith("image.") else (plan.prefix or "cube")
        conv = "" if plan.kind == "unconvolved" else ".conv"
        base = f"{kind}.{plan.stokes.lower()}.{rest}{conv}"
        return CubePaths(out_dir / f"image.{base}.fits", out_dir / f"beamlog.image.{base}.txt",
                         out_dir / f"weights.{base}.txt")
    stem = f"{plan.prefix or 'cube'}-{plan.stokes}-{plan.kind}.cube"
    return CubePaths(out_dir / f"{stem}.fits", out_dir / f"{stem}.beamlog.txt", out_dir / f"{stem}.weights.txt")


def side_files(cube: Path) -> CubePaths:
    """Where the beam log and weights of an existing cube `cube` sit (either naming style, by its name)."""
    cube = Path(cube)
    stem = cube.name[:-5] if cube.name.endswith(".fits") else cube.name
    if stem.startswith("image.") and not stem.endswith(".cube"):  # Arrakis: image.REST.fits
        rest = stem[len("image."):]
        return CubePaths(cube, cube.with_name(f"beamlog.image.{rest}.txt"), cube.with_name(f"weights.{rest}.txt"))
    return CubePaths(cube, cube.with_name(f"{stem}.beamlog.txt"), cube.with_name(f"{stem}.weights.txt"))
