"""The polarisation-axis angle of an ASKAP beam, from the FEED rows of the MS's own beam.

The pol axis is 45 deg minus the instrument's receptor angle (the convention Arrakis writes into its cubes as
INSTRUMENT_RECEPTOR_ANGLE, in degrees, and linmos reads). FixMS moves the instrument's angle to
FEED.INSTRUMENT_RECEPTOR_ANGLE; without FixMS it is still in RECEPTOR_ANGLE. Either way it is read from the
FEED rows of the beam the MS holds (FEED_ID = FEED1), not from FEED row 0, and must be the same in all of them.
"""

from __future__ import annotations

from pathlib import Path

from mpimager.errors import InputError, MSError

COLUMN = "INSTRUMENT_RECEPTOR_ANGLE"


def pol_axis_from_ms(ms: Path) -> float | None:
    """Degrees, from the MS's own beam: INSTRUMENT_RECEPTOR_ANGLE (FixMS ran) else RECEPTOR_ANGLE (it did not).

    `ms`: the MeasurementSet. None if FEED has no row for the beam's angle; InputError naming the MS when the
    angle differs between the beam's FEED rows or the MS is not readable.
    """
    ms = Path(ms)
    if not (ms / "FEED").is_dir():
        raise InputError(f"{ms}: not a MeasurementSet (no FEED table)")
    from mpimager.inputs.msstate import beam_receptor_angle_deg

    try:
        angle = beam_receptor_angle_deg(ms, COLUMN)
        if angle is None:
            angle = beam_receptor_angle_deg(ms, "RECEPTOR_ANGLE")
    except MSError as exc:
        raise InputError(str(exc)) from None
    return None if angle is None else 45.0 - angle
