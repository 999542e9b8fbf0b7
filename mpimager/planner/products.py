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
        return _ours(out_file)
    if options.names == "arrakis":
        kind = "residual" if plan.kind == "residual" else "restored"
        rest = plan.prefix[len("image."):] if plan.prefix.startswith("image.") else (plan.prefix or "cube")
        conv = "" if plan.kind == "unconvolved" else ".conv"
        return _arrakis(out_dir / f"image.{kind}.{plan.stokes.lower()}.{rest}{conv}.fits")
    return _ours(out_dir / f"{plan.prefix or 'cube'}-{plan.stokes}-{plan.kind}.cube.fits")


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


def _stem(cube: Path) -> str:
    return cube.name[:-5] if cube.name.endswith(".fits") else cube.name


def _ours(cube: Path) -> CubePaths:
    """mpimager's side files of `cube` (STEM.fits): STEM.beamlog.ecsv, STEM.weights.txt."""
    stem = _stem(cube)
    return CubePaths(cube, cube.with_name(f"{stem}.beamlog.ecsv"), cube.with_name(f"{stem}.weights.txt"))


def _arrakis(cube: Path) -> CubePaths:
    """Arrakis-named side files of `cube` (image.REST.fits): beamlog.image.REST.ecsv, weights.REST.txt."""
    rest = _stem(cube)[len("image."):]
    return CubePaths(cube, cube.with_name(f"beamlog.image.{rest}.ecsv"), cube.with_name(f"weights.{rest}.txt"))


def side_files(cube: Path) -> CubePaths:
    """Where the beam log and weights of an existing cube `cube` sit (either naming style, by its name)."""
    cube = Path(cube)
    stem = _stem(cube)
    return _arrakis(cube) if stem.startswith("image.") and not stem.endswith(".cube") else _ours(cube)


def side_file_candidates(cube: Path, earlier: bool = False) -> tuple[list[Path], list[Path]]:
    """(beam logs, weights files) that may sit beside the cube `cube`, in the order to look for them.

    cube: the cube's path. earlier: also the text beam log of earlier mpimager versions (STEM.beamlog.txt,
    which only the report reads). mpimager's names first (then Arrakis' for an `image.*` name), and RACS-tools'
    beam log `beamlog.STEM.txt` last.
    """
    cube = Path(cube)
    stem = _stem(cube)
    named = [_ours(cube), *([_arrakis(cube)] if stem.startswith("image.") else [])]
    beamlogs = [p.beamlog for p in named]
    if earlier:
        beamlogs.append(cube.with_name(f"{stem}.beamlog.txt"))
    beamlogs.append(cube.with_name(f"beamlog.{stem}.txt"))
    return beamlogs, [p.weights for p in named]


def beamlog_candidates(cube: Path) -> list[Path]:
    """Beam logs that may sit beside the input cube `cube`, ours first (`side_file_candidates`' beam logs)."""
    return side_file_candidates(cube)[0]


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


MOSAIC_MFS_SUFFIX = ".mosaic.mfs.fits"  # a mosaic's MFS image is NAME + this


def mosaic_paths(out_dir: Path, name: str) -> MosaicPaths:
    """Where the mosaic `name`'s files go in `out_dir`."""
    d = Path(out_dir)
    return MosaicPaths(d / f"{name}.mosaic.fits", d / f"{name}{MOSAIC_MFS_SUFFIX}", d / f"{name}.mosaic.weight.fits",
                       d / f"{name}.mosaic.beamlog.txt")


def is_mosaic_mfs(path: str | Path) -> bool:
    """Whether `path` names a mosaic's MFS image (`mosaic_paths(...).mfs`)."""
    return Path(path).name.endswith(MOSAIC_MFS_SUFFIX)
