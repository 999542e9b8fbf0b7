"""The `[mosaic]` options of mpimager.mosaic: one frozen value, validated from a TOML table naming the key.

Pure and light to import (the config loader imports it). `MosaicOptions.from_mapping` is what the loader
calls; `mpimager mosaic` builds the same value from its flags, so a run and a standalone mosaic agree.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mpimager.errors import ConfigError

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
        for f in fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(f.name, list(value) if isinstance(value, tuple) else value, "MosaicOptions")
            if coerced != value:
                object.__setattr__(self, f.name, coerced)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "[mosaic]") -> MosaicOptions:
        """Validate a `[mosaic]` TOML table `d`; unknown keys and bad values raise ConfigError naming the key."""
        known = [f.name for f in fields(cls)]
        values = {}
        for key, value in d.items():
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(f"{where} unknown key '{key}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
            values[key] = _coerce(key, value, where)
        return cls(**values)

    def with_flags(self, **flags: Any) -> MosaicOptions:
        """A copy with the non-None `flags` set (command-line overrides)."""
        return replace(self, **{k: v for k, v in flags.items() if v is not None})

    @property
    def dish_and_factor(self) -> tuple[float, float]:
        """(dish diameter m, FWHM factor) of the Gaussian primary beam."""
        dish, factor = TELESCOPES[self.telescope]
        return (self.dish_diameter or dish, self.fwhm_factor or factor)


def _expect(where: str, key: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{where} {key}: expected {what}, got {value!r}")


def _positive(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _expect(where, key, "a positive number", value)
    return float(value)


def _coerce(key: str, value: Any, where: str) -> Any:
    if key == "enabled":
        if not isinstance(value, bool):
            raise _expect(where, key, "true or false", value)
        return value
    if key == "telescope":
        if not isinstance(value, str) or value.upper() not in TELESCOPES:
            raise _expect(where, key, "one of " + ", ".join(TELESCOPES), value)
        return value.upper()
    if key in ("dish_diameter", "fwhm_factor"):
        return None if value is None else _positive(where, key, value)
    if key == "cutoff":
        v = _positive(where, key, value)
        if v >= 1:
            raise _expect(where, key, "a number between 0 and 1", value)
        return v
    if key == "centre":
        if value is None:
            return None
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
                or not -90 <= value[1] <= 90):
            raise _expect(where, key, "[RA deg, Dec deg]", value)
        return (float(value[0]) % 360.0, float(value[1]))
    if key == "interpolation":
        if value not in INTERPOLATIONS:
            raise _expect(where, key, "one of " + ", ".join(INTERPOLATIONS), value)
        return value
    if key in ("primary_beams", "out_dir"):
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise _expect(where, key, "a path string", value)
        return value
    if key == "planes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _expect(where, key, "a positive integer", value)
        return value
    raise ConfigError(f"{where} unknown key '{key}'")  # pragma: no cover
