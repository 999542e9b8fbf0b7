"""Directions on the sky: the angular distance between (RA, Dec) directions, the one formula (haversine) for
an MS's phase centre against its beam (`msstate`, the FixMS step) and a pixel against a cube's centre (mosaic).

mpimager.testing.field keeps its own copy: the synthesiser that makes the test data stays independent of the
code the tests check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def separation_deg(ra1, dec1, ra2, dec2):
    """Angular distance in degrees between the directions (`ra1`, `dec1`) and (`ra2`, `dec2`), given in
    degrees as numbers or arrays broadcast together (haversine: exact at small distances)."""
    ra1, dec1, ra2, dec2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def separation_arcsec(a: Sequence[float], b: Sequence[float]) -> float:
    """Angular distance in arcseconds between `a` and `b`, (ra, dec) pairs in degrees (`separation_deg`)."""
    return float(separation_deg(a[0], a[1], b[0], b[1])) * 3600.0
