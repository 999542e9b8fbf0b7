"""The names of the gather step's products (a cube and its side files) and what a cube's own name says: pure.

mpimager names: PREFIX-S-KIND.cube.fits with .beamlog.ecsv and .weights.txt beside it; Arrakis names
(`names = "arrakis"`, for a prefix image.REST): image.restored.s.REST.conv.fits,
beamlog.image.restored.s.REST.conv.ecsv and weights.restored.s.REST.conv.txt. The beam log is an ECSV
table (not RACS-tools' `beamlog.NAME.txt`), so beamcon_3D, which looks for that name beside a cube
without a BEAMS table, reads the cube's header beam instead of mistaking our log for its own.

`cube_name_parts` reads those names back (a cube given as input keeps its prefix, Stokes and kind);
RACS-tools' beam logs beside a cube are `beamlog.STEM.txt` (`racs_beamlog`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mpimager.config.reduce import ReduceOptions

_OURS = re.compile(r"^(?P<prefix>.+)-(?P<pol>I|Q|U|V|XX|XY|YX|YY|RR|RL|LR|LL)-"
                   r"(?P<kind>restored|residual|unconvolved)\.cube\.fits$")
_ARRAKIS = re.compile(r"^image\.(?P<kind>restored|residual)\.(?P<pol>[iquv])\.(?P<rest>.+?)(?P<conv>\.conv)?\.fits$")


@dataclass(frozen=True)
class CubePaths:
    cube: Path
    beamlog: Path
    weights: Path

    @property
    def partial(self) -> Path:
        return self.cube.with_name(f".{self.cube.name}.partial")


def cube_paths(plan, options: ReduceOptions, out_dir: Path, out_file: Path | None = None) -> CubePaths:
    """Where a cube and its side files go: `out_file` (side files beside it) when given, else in `out_dir`
    under the naming `options.names` picks; `plan` needs .prefix, .stokes and .kind (a CubePlan or alike)."""
    if out_file is not None:
        stem = out_file.name[:-5] if out_file.name.endswith(".fits") else out_file.name
        return CubePaths(out_file, out_file.with_name(f"{stem}.beamlog.ecsv"),
                         out_file.with_name(f"{stem}.weights.txt"))
    if options.names == "arrakis":
        kind = "residual" if plan.kind == "residual" else "restored"
        rest = plan.prefix[len("image."):] if plan.prefix.startswith("image.") else (plan.prefix or "cube")
        conv = "" if plan.kind == "unconvolved" else ".conv"
        base = f"{kind}.{plan.stokes.lower()}.{rest}{conv}"
        return CubePaths(out_dir / f"image.{base}.fits", out_dir / f"beamlog.image.{base}.ecsv",
                         out_dir / f"weights.{base}.txt")
    stem = f"{plan.prefix or 'cube'}-{plan.stokes}-{plan.kind}.cube"
    return CubePaths(out_dir / f"{stem}.fits", out_dir / f"{stem}.beamlog.ecsv", out_dir / f"{stem}.weights.txt")


@dataclass(frozen=True)
class CubeName:
    """What a cube file's name says: its imaging prefix, Stokes (None: from the header) and kind."""

    prefix: str
    stokes: str | None
    kind: str  # image (restored or unconvolved planes) | residual


def cube_name_parts(path: Path) -> CubeName:
    """The prefix, Stokes and kind of the cube at `path` from its name (mpimager's or Arrakis'), else the
    file stem (Stokes None; kind residual when the stem says so)."""
    name = path.name
    m = _OURS.match(name)
    if m:
        return CubeName(m["prefix"], m["pol"], "residual" if m["kind"] == "residual" else "image")
    m = _ARRAKIS.match(name)
    if m:
        return CubeName(f"image.{m['rest']}", m["pol"].upper(), "residual" if m["kind"] == "residual" else "image")
    stem = name[:-5] if name.endswith(".fits") else name
    return CubeName(stem, None, "residual" if "residual" in stem else "image")


def beamlog_candidates(cube: Path) -> list[Path]:
    """Beam logs that may sit beside an input cube, ours first: mpimager's ECSV, then RACS-tools' text."""
    stem = cube.name[:-5] if cube.name.endswith(".fits") else cube.name
    d = cube.parent
    ours = [d / f"{stem}.beamlog.ecsv"]
    if stem.startswith("image."):
        ours.append(d / f"beamlog.{stem}.ecsv")
    return [*ours, d / f"beamlog.{stem}.txt"]


def side_files(cube: Path) -> CubePaths:
    """Where the beam log and weights of an existing cube `cube` sit (either naming style, by its name)."""
    cube = Path(cube)
    stem = cube.name[:-5] if cube.name.endswith(".fits") else cube.name
    if stem.startswith("image.") and not stem.endswith(".cube"):  # Arrakis: image.REST.fits
        rest = stem[len("image."):]
        return CubePaths(cube, cube.with_name(f"beamlog.image.{rest}.ecsv"), cube.with_name(f"weights.{rest}.txt"))
    return CubePaths(cube, cube.with_name(f"{stem}.beamlog.ecsv"), cube.with_name(f"{stem}.weights.txt"))


# --- the mosaic step's files (mpimager.mosaic.products describes them) ----------------------------------


@dataclass(frozen=True)
class MosaicPaths:
    cube: Path
    mfs: Path
    weight: Path
    beamlog: Path

    @property
    def fits(self) -> tuple[Path, Path, Path]:
        return (self.cube, self.mfs, self.weight)

    def all(self) -> tuple[Path, ...]:
        """Every file of the mosaic: its FITS files, then the beam log."""
        return (*self.fits, self.beamlog)


def mosaic_paths(out_dir: Path, name: str) -> MosaicPaths:
    """Where the mosaic `name`'s files go in `out_dir`."""
    d = Path(out_dir)
    return MosaicPaths(d / f"{name}.mosaic.fits", d / f"{name}.mosaic.mfs.fits", d / f"{name}.mosaic.weight.fits",
                       d / f"{name}.mosaic.beamlog.txt")
