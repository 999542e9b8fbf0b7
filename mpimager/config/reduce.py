"""The `[reduce]` options: one frozen value, validated from a TOML table with messages naming the key.

Pure: no FITS, no MPI. `ReduceOptions.from_mapping` is what the config loader calls; the `reduce`
command builds the same value from its flags, so a run and a standalone reduce behave alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mpimager.errors import ConfigError

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

    def __post_init__(self):
        # the same checks as from_mapping, for values built in code; one line each
        _check(self, "ReduceOptions")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "[reduce]") -> ReduceOptions:
        """Validate a `[reduce]` TOML table; unknown keys and bad values raise ConfigError naming the key."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                near = _nearest(key, known)
                raise ConfigError(f"{where} unknown key '{key}'{near}")
            values[key] = _coerce(key, value, where)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Every field as a `[reduce]` table (JSON-ready): `from_mapping(o.to_mapping()) == o`."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def _nearest(key: str, known) -> str:
    import difflib
    match = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _expect(where: str, key: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{where} {key}: expected {what}, got {value!r}")


def _choice(where, key, value, choices):
    if value not in choices:
        what = " or ".join(repr(c) for c in choices) if len(choices) == 2 else \
            "one of " + ", ".join(repr(c) for c in choices)
        raise _expect(where, key, what, value)
    return value


def _number(where, key, value, minimum=0.0, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect(where, key, "a number", value)
    if value < minimum or (strict and value == minimum):
        raise _expect(where, key, f"a number {'>' if strict else '>='} {minimum:g}", value)
    return float(value)


def _coerce(key: str, value: Any, where: str) -> Any:
    if key in ("enabled", "purge", "circularise", "use_beamlogs"):
        if not isinstance(value, bool):
            raise _expect(where, key, "true or false", value)
        return value
    if key == "psf_cutoff":
        if value is False or value is None:
            return None
        return _number(where, key, value, 0.0, strict=True)
    if key == "resolution":
        return _choice(where, key, value, RESOLUTIONS)
    if key == "scope":
        return _choice(where, key, value, SCOPES)
    if key == "axis_order":
        return _choice(where, key, value, AXIS_ORDERS)
    if key == "names":
        return _choice(where, key, value, NAME_STYLES)
    if key == "cubes":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise _expect(where, key, "a list of " + ", ".join(repr(c) for c in CUBE_KINDS), value)
        for item in items:
            if item not in CUBE_KINDS:
                raise _expect(where, key, "a list of " + ", ".join(repr(c) for c in CUBE_KINDS), value)
        return tuple(dict.fromkeys(items))
    if key == "psf_outlier":
        if value is False or value is None or value == 0:
            return None
        v = _number(where, key, value, 1.0)
        return v
    if key == "ref_chan":
        if value is None:
            return None
        if value in ("first", "last", "mid") or (isinstance(value, int) and not isinstance(value, bool)
                                                  and value >= 0):
            return value
        raise _expect(where, key, "'first', 'last', 'mid' or a plane index >= 0", value)
    if key == "ref_freq":
        if value is None or value is False:
            return None
        return _number(where, key, value, 0.0, strict=True)
    if key == "round_up":
        return _number(where, key, value, 0.0)
    if key == "min_weight":
        v = _number(where, key, value, 0.0, strict=True)
        if v >= 1:
            raise _expect(where, key, "a number between 0 and 1", value)
        return v
    if key == "threads":
        if value is None or value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _expect(where, key, "a positive integer", value)
        return value
    if key == "beam":
        if value is None or value is False:
            return None
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise _expect(where, key, "[BMAJ arcsec, BMIN arcsec, BPA deg]", value)
        bmaj, bmin, bpa = (float(v) for v in value)
        if not (bmaj > 0 and 0 < bmin <= bmaj):
            raise _expect(where, key, "BMAJ >= BMIN > 0", value)
        return (bmaj, bmin, bpa)
    raise ConfigError(f"{where} unknown key '{key}'")  # pragma: no cover


def _check(opts: ReduceOptions, where: str) -> None:
    for f in fields(opts):
        value = getattr(opts, f.name)
        coerced = _coerce(f.name, list(value) if f.name == "cubes" and isinstance(value, tuple) else value,
                          where)
        if coerced != value:
            object.__setattr__(opts, f.name, coerced)
