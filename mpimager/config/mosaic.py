"""The `[mosaic]` options of mpimager.mosaic: one frozen value, its keys declared once in the validator vocabulary.

Pure and light to import (the config loader imports it). `MosaicOptions.from_mapping` is what the loader
calls; `mpimager mosaic` builds the same value from its flags, so a run and a standalone mosaic agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mpimager.config import validate as v
from mpimager.config.validate import ABSOLUTE_TOKENS

#: Gaussian primary-beam presets: dish diameter (m) and FWHM = factor x lambda / D (linmos' Gaussian model)
TELESCOPES: dict[str, tuple[float, float]] = {"ASKAP": (12.0, 1.09), "MEERKAT": (13.5, 1.09), "VLA": (25.0, 1.02)}
#: reproject's interpolation orders
INTERPOLATIONS = ("nearest-neighbor", "bilinear", "biquadratic", "bicubic")


@dataclass(frozen=True)
class MosaicOptions:
    """How a field's PSF-matched beams become one primary-beam-corrected mosaic."""

    enabled: bool = False
    """Add one mosaic job per field, pass, Stokes and product after the gather jobs of a run."""
    telescope: str = "ASKAP"
    """Preset of the Gaussian primary beam (dish diameter and FWHM factor): ASKAP, MEERKAT or VLA."""
    dish_diameter: float | None = None
    """Metres; overrides the preset."""
    fwhm_factor: float | None = None
    """FWHM = fwhm_factor x lambda / dish_diameter (radians); overrides the preset (ASKAP: 1.09)."""
    cutoff: float = 0.2
    """A beam contributes only where its primary-beam response is at least this; pixels no beam reaches
    are blanked (NaN)."""
    centre: tuple[float, float] | None = None
    """(RA, Dec) degrees of the field grid's SIN projection centre; default: the mean of the beam centres."""
    interpolation: str = "bicubic"
    """reproject's interpolation order: nearest-neighbor, bilinear, biquadratic or bicubic."""
    primary_beams: str | None = None
    """Per-beam primary-beam images or cubes instead of the Gaussian: a path with $beam$ (two digits)."""
    out_dir: str | None = None
    """Where mosaics go in a run (default RUN_DIR/mosaics)."""
    planes: int = 2
    """Channels reprojected together (one coordinate transform per beam per step); memory grows with it."""

    def __post_init__(self) -> None:
        SECTION.normalise(self, "MosaicOptions")  # values built in code get the checks of a config table

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "[mosaic]") -> MosaicOptions:
        """Validate a `[mosaic]` table `d` (TOML or command-line flags): every unknown key and bad value at once,
        in one ConfigError naming `where` (e.g. 'FILE: [mosaic]') and the key."""
        return cls(**SECTION.parse(d, where))

    def to_mapping(self) -> dict[str, Any]:
        """Every field as a `[mosaic]` table (JSON-ready): `from_mapping(o.to_mapping()) == o`."""
        return v.table_of(self)

    def with_flags(self, **flags: Any) -> MosaicOptions:
        """A copy with the non-None `flags` set (command-line overrides)."""
        return replace(self, **{k: v for k, v in flags.items() if v is not None})

    @property
    def dish_and_factor(self) -> tuple[float, float]:
        """(dish diameter m, FWHM factor) of the Gaussian primary beam."""
        dish, factor = TELESCOPES[self.telescope]
        return (self.dish_diameter or dish, self.fwhm_factor or factor)



def _centre(value: Any, base: Path | None = None) -> tuple[float, float]:
    ra, dec = v.numbers(2, what="[RA deg, Dec deg]")(value)
    if not -90 <= dec <= 90:
        raise v.Invalid("[RA deg, Dec deg]")
    return (ra % 360.0, dec)


_positive = v.number(0.0, strict=True, what="a positive number")
#: every key of [mosaic] and what it may be (the defaults are MosaicOptions' own)
SECTION = v.Section({
    "enabled": v.boolean,
    "telescope": v.choice(TELESCOPES, quote=False, fold=str.upper),
    "dish_diameter": v.optional(_positive),
    "fwhm_factor": v.optional(_positive),
    "cutoff": v.number(0.0, strict=True, below=1.0, what="a positive number"),
    "centre": v.optional(_centre),
    "interpolation": v.choice(INTERPOLATIONS, quote=False),
    "primary_beams": v.optional(v.path(keep=ABSOLUTE_TOKENS)),
    "out_dir": v.optional(v.path(keep=ABSOLUTE_TOKENS)),
    "planes": v.integer(1, what="a positive integer"),
})
