"""The `[reduce]` options: one frozen value, its keys declared once in the config's validator vocabulary.

Pure: no FITS, no MPI. `ReduceOptions.from_mapping` is what the config loader calls; the `reduce`
command builds the same value from its flags, so a run and a standalone reduce behave alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpimager.config import validate as v

CUBE_KINDS = ("restored", "residual", "unconvolved")
RESOLUTIONS = ("total", "natural")
SCOPES = ("prefix", "beam", "observation")  # "beam": a run's passes of one MS (group) share a beam
AXIS_ORDERS = ("freq-stokes", "stokes-freq")
NAME_STYLES = ("mpimager", "arrakis")


@dataclass(frozen=True)
class ReduceOptions:
    """How channel images become PSF-matched cubes."""

    enabled: bool = True
    """Run the gather step at the end of a run."""
    psf_cutoff: float | None = None
    """Arcsec: channels whose BMAJ exceeds it are left out of the common beam and blanked."""
    resolution: str = "total"
    """'total': one beam for the band; 'natural': a common beam per channel (across Stokes / beams)."""
    scope: str = "prefix"
    """Which channels share a common beam: 'prefix' (one imaging prefix, all its Stokes), 'beam' (in a
    run: every pass of one MS or MS group, e.g. a beam's I and QU as Arrakis) or 'observation' (every
    prefix given, e.g. all 36 beams)."""
    cubes: tuple[str, ...] = ("restored",)
    """Products: 'restored' (PSF-matched images), 'residual' (PSF-matched residuals), 'unconvolved'."""
    purge: bool = False
    """Delete the channel images of a cube once it is written and verified."""
    axis_order: str = "freq-stokes"
    """FITS axis order after RA, DEC: 'freq-stokes' or 'stokes-freq' (yandasoft linmos, Arrakis)."""
    names: str = "mpimager"
    """Cube names: 'mpimager' (PREFIX-S-KIND.cube.fits) or 'arrakis' (image.restored.s.REST.conv.fits)."""
    round_up: float = 0.1
    """Arcsec: the common beam's axes are rounded up to a multiple of this (0 turns rounding off)."""
    beam: tuple[float, float, float] | None = None
    """Target beam (BMAJ arcsec, BMIN arcsec, BPA deg) for every plane instead of the computed one (either
    mode; a natural cube then still carries its BEAMS table)."""
    circularise: bool = False
    """Make the target beam circular (BMIN = BMAJ, BPA = 0), as beamcon_3D --circularise."""
    psf_outlier: float | None = 3.0
    """Without psf_cutoff: blank channels whose BMAJ exceeds this many times the median BMAJ of their
    group, or a quarter of the image (absurd fits, e.g. a single baseline's PSF); 0 or None keeps them."""
    ref_chan: str | int | None = None
    """Natural cubes: the plane whose beam goes into the header BMAJ/BMIN/BPA ('first', 'last', 'mid' or a
    plane index), as beamcon_3D --ref_chan; None (and no ref_freq): no header beam, only the BEAMS table."""
    ref_freq: float | None = None
    """Natural cubes: like ref_chan, the plane nearest this frequency (Hz); given both, ref_freq counts."""
    use_beamlogs: bool = False
    """Cubes given as input: trust a beam log beside the cube before its header beam (BEAMS tables first)."""
    threads: int | None = None
    """Threads per rank for reading, FFTs and writing; None = the cores of the node shared by its ranks."""
    min_weight: float = 1e-3
    """Normalised convolution: a pixel is blanked when less than this fraction of its kernel's weight
    falls on valid (non-NaN) pixels."""

    def __post_init__(self) -> None:
        SECTION.normalise(self, "ReduceOptions")  # values built in code get the checks of a config table

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "[reduce]") -> ReduceOptions:
        """Validate a `[reduce]` table `d` (TOML, JSON or command-line flags): every unknown key and bad value
        at once, in one ConfigError naming `where` (e.g. 'FILE: [reduce]') and the key."""
        return cls(**SECTION.parse(d, where))

    def to_mapping(self) -> dict[str, Any]:
        """Every field as a `[reduce]` table (JSON-ready): `from_mapping(o.to_mapping()) == o`."""
        return v.table_of(self)


def _beam(value: Any, base: Path | None = None) -> tuple[float, float, float]:
    bmaj, bmin, bpa = v.numbers(3, what="[BMAJ arcsec, BMIN arcsec, BPA deg]")(value)
    if not (bmaj > 0 and 0 < bmin <= bmaj):
        raise v.Invalid("BMAJ >= BMIN > 0")
    return (bmaj, bmin, bpa)


_UNSET = (None, False)  # `false` unsets an option a lower layer set
#: every key of [reduce] and what it may be (the defaults are ReduceOptions' own)
SECTION = v.Section({
    "enabled": v.boolean, "purge": v.boolean, "circularise": v.boolean, "use_beamlogs": v.boolean,
    "psf_cutoff": v.optional(v.number(0.0, strict=True), unset=_UNSET),
    "resolution": v.choice(RESOLUTIONS), "scope": v.choice(SCOPES), "axis_order": v.choice(AXIS_ORDERS),
    "names": v.choice(NAME_STYLES),
    "cubes": v.list_of(v.choice(CUBE_KINDS), what="a list of " + ", ".join(repr(c) for c in CUBE_KINDS),
                       scalar=True, nonempty=True, unique=True),
    "psf_outlier": v.optional(v.number(1.0), unset=(*_UNSET, 0)),
    "ref_chan": v.optional(v.either(v.choice(("first", "last", "mid")), v.integer(0),
                                    what="'first', 'last', 'mid' or a plane index >= 0")),
    "ref_freq": v.optional(v.number(0.0, strict=True), unset=_UNSET),
    "round_up": v.number(0.0),
    "min_weight": v.number(0.0, strict=True, below=1.0),
    "threads": v.optional(v.integer(1, what="a positive integer"), unset=_UNSET),
    "beam": v.optional(_beam, unset=_UNSET),
})
