"""The polarisation-axis angle of an ASKAP beam, from the FEED table FixMS left behind.

FixMS moves the original receptor angle to FEED.INSTRUMENT_RECEPTOR_ANGLE; the pol axis is 45 deg minus
it (the convention Arrakis writes into its cubes as INSTRUMENT_RECEPTOR_ANGLE, in degrees).
"""

from __future__ import annotations

import math
from pathlib import Path

from mpimager.errors import InputError

COLUMN = "INSTRUMENT_RECEPTOR_ANGLE"


def pol_axis_from_ms(ms: Path) -> float | None:
    """Degrees, from the first FEED row's first receptor; None if FixMS never ran on this MS."""
    ms = Path(ms)
    if not (ms / "FEED").is_dir():
        raise InputError(f"{ms}: not a MeasurementSet (no FEED table)")
    from casacore.tables import table

    with table(str(ms / "FEED"), readonly=True, ack=False) as feed:
        if COLUMN not in feed.colnames() or feed.nrows() == 0:
            return None
        angle = feed.getcell(COLUMN, 0)[0]
    return 45.0 - math.degrees(float(angle))
