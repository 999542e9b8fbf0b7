"""What FixMS has (or has not) done to an ASKAP MeasurementSet, told from the evidence it carries (read-only).

Owns the states an ASKAP beam arrives in (`MSState`), the evidence read to tell them apart (`Evidence`:
columns, FEED / FIELD / FIELD_OLD / FEED_OLD / POINTING, mpimager's completion record), the beam's direction
(the boresight shifted by the beam's FEED offset, as `fixms.fix_ms_dir` computes it, but from any FEED row
of the beam and without needing antenna-0 autocorrelations) and the beam's own receptor angle.

The planner uses `classify` to pick the column to image and to refuse an MS whose state cannot be told
(exit 2 before any job); the FixMS step (`mpimager.runtime.fixms`) uses it to decide what to do.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.errors import MSError
from mpimager.inputs.sky import separation_arcsec
from mpimager.states import StrEnum

IRA = "INSTRUMENT_RECEPTOR_ANGLE"
INSTRUMENT_DATA = "INSTRUMENT_DATA"
RECORD_NAME = "MPIMAGER_FIXMS.json"  # mpimager's completion record, inside the MS
WORK_SUFFIX = ".mpimager-fixms"  # <parent>/.<ms name><suffix>: the copy a running fix works on
SKY_RECEPTOR_DEG = 45.0  # RECEPTOR_ANGLE after fix_ms_corrs (pol axis 0: data in the sky frame)
SAME_DIRECTION_ARCSEC = 0.01  # two directions closer than this are one
CHANGED_TABLES = ("", "FEED", "FIELD", "HISTORY")  # the tables a fix writes ("" is the main table)


class MSState(StrEnum):
    """The states the FixMS step knows (values are what logs and `--state` print)."""

    RAW = "raw"  # from the ASKAP pipeline: instrument frame, FIELD at the boresight
    FIXED_BY_MPIMAGER = "fixed"  # mpimager's record for these options, output column present
    FIXED_UPSTREAM = "fixed-externally"  # fixms ran (output column + FIELD_OLD + INSTRUMENT_RECEPTOR_ANGLE)
    PREPROCESSED = "preprocessed"  # DATA already in the sky frame, INSTRUMENT_DATA kept: image DATA as is
    SPLIT_AFTER_FIX = "split-after-fix"  # split/copied after a fix: FIELD at the beam, FIELD_OLD gone
    INTERRUPTED = "interrupted"  # a fix was killed: its working copy is left next to the MS
    RUNNING = "running"  # another process is fixing it now
    FIXED_DIFFERENTLY = "fixed-differently"  # mpimager fixed it into this column with other options
    FOREIGN_COLUMN = "foreign-column"  # the output column exists and FixMS did not make it
    UNKNOWN = "unknown"  # the evidence contradicts itself: refused


@dataclass(frozen=True)
class Verdict:
    """A state, the column that holds sky-frame data once the step is done (None: refused), and why."""

    state: MSState
    image_column: str | None
    evidence: str


@dataclass(frozen=True)
class Evidence:
    """Everything the state is told from, read once from the MS."""

    path: str
    beam: int | None  # FEED1 of the main table, when single-valued
    columns: frozenset[str]
    feed_columns: frozenset[str]
    field_old: bool
    feed_old: bool
    receptor_deg: float | None  # this beam's RECEPTOR_ANGLE (receptor 0)
    offset_deg: tuple[float, float]  # this beam's FEED offset now (dra, ddec)
    original_offset_deg: tuple[float, float]  # from FEED_OLD if present, else FEED
    field_deg: tuple[float, float]  # FIELD row 0 PHASE_DIR
    field_old_deg: tuple[float, float] | None
    pointing_deg: tuple[float, float] | None  # POINTING.TARGET row 0, if POINTING has rows
    record: dict | None
    work_left: bool = False  # a fix's working copy is next to the MS (a fix was killed, or is running)

    @property
    def offset_known(self) -> bool:
        """The beam's offset from the boresight is still recorded (FEED_OLD, or a raw FEED)."""
        return self.feed_old or any(self.offset_deg)

    @property
    def boresight_deg(self) -> tuple[float, float]:
        return self.field_old_deg if self.field_old_deg is not None else self.field_deg

    @property
    def beam_direction_deg(self) -> tuple[float, float] | None:
        """Where FIELD must point once the step is done; None if the offset is no longer recorded."""
        if not self.offset_known:
            return None
        return beam_centre(self.boresight_deg, self.original_offset_deg)

    @property
    def field_moved(self) -> bool | None:
        """FIELD differs from the boresight (FIELD_OLD, else POINTING.TARGET); None if neither is there."""
        reference = self.field_old_deg if self.field_old_deg is not None else self.pointing_deg
        if reference is None:
            return None
        return separation_arcsec(reference, self.field_deg) > SAME_DIRECTION_ARCSEC

    @property
    def phase_centre_error_arcsec(self) -> float | None:
        expected = self.beam_direction_deg
        return None if expected is None else separation_arcsec(expected, self.field_deg)


# ---------------------------------------------------------------------------------------------- geometry (pure)


def beam_centre(boresight_deg: Sequence[float], beam_offset_deg: Sequence[float]) -> tuple[float, float]:
    """The centre of an ASKAP beam: `boresight_deg` (ra, dec) moved by `beam_offset_deg` (dra, ddec),
    all in degrees.

    The RA offset is an arc along the great circle through the point at the shifted latitude
    (not a change of RA coordinate): the direction (ra=dra, dec=0) tilted north by dec+ddec, then
    turned by ra. This is the offset convention FixMS applies to FEED.BEAM_OFFSET, whose first
    component is minus this RA offset.
    """
    lon = math.radians(boresight_deg[0])
    dlon = math.radians(beam_offset_deg[0])
    tilt = math.radians(boresight_deg[1] + beam_offset_deg[1])
    x = math.cos(dlon) * math.cos(tilt)
    y = math.sin(dlon)
    z = math.cos(dlon) * math.sin(tilt)
    ra = lon + math.atan2(y, x)
    dec = math.asin(max(-1.0, min(1.0, z)))
    return math.degrees(ra) % 360.0, math.degrees(dec)


def direction_deg(direction: np.ndarray) -> tuple[float, float]:
    """(ra, dec) in degrees, ra in [0, 360), of `direction`, a (ra, dec) pair in radians (a FIELD or
    POINTING cell row)."""
    return float(np.degrees(direction[0]) % 360.0), float(np.degrees(direction[1]))


# ---------------------------------------------------------------------------------------------- reading


def beam_rows(feed, beam: int) -> np.ndarray:
    """Row numbers of `feed` (an open FEED table) that describe `beam` (FEED_ID == beam)."""
    return np.flatnonzero(feed.getcol("FEED_ID") == beam)


def beam_receptor_angle_deg(ms, column: str = "RECEPTOR_ANGLE", beam: int | None = None) -> float | None:
    """The receptor angle (degrees, first receptor) of the beam of the MS at `ms`, from the FEED rows of
    that FEED_ID.

    `column`: the FEED column to read (RECEPTOR_ANGLE, or INSTRUMENT_RECEPTOR_ANGLE). `beam`: FEED_ID (default:
    FEED1 of the main table). Returns None when the column is absent. MSError when the beam has no FEED row,
    the angle is not the same in all of them, or (`beam` not given) the main table holds several beams.
    """
    from casacore import tables as ct

    ms = Path(ms)
    if beam is None:
        beam = _beam_of(ms)
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        if column not in feed.colnames():
            return None
        rows = beam_rows(feed, beam)
        if not len(rows):
            raise MSError(f"{ms}: FEED has no row for beam {beam} (FEED_ID {beam})")
        angles = np.degrees(feed.getcol(column)[rows, 0])
    if np.ptp(angles) > 1e-6:
        raise MSError(f"{ms}: FEED.{column} of beam {beam} is not constant "
                      f"({angles.min():.4f} to {angles.max():.4f} deg over {len(rows)} rows)")
    return float(angles[0])


def _beam_of(ms: Path) -> int:
    from casacore import tables as ct

    with ct.table(str(ms), ack=False) as main:
        feeds = set(main.getcol("FEED1", 0, min(main.nrows(), 10000)).tolist()) if main.nrows() else {0}
    if len(feeds) != 1:
        raise MSError(f"{ms}: holds several beams (FEED1 {sorted(feeds)}); FixMS needs one beam per MS")
    return int(feeds.pop())


def _beam_offset_deg(table, beam: int, first_time: float | None) -> tuple[float, float]:
    """(dra, ddec) of `beam` from a FEED-like table: the antenna-0 row whose TIME +- INTERVAL/2 covers the
    data (fix_ms_dir's choice), else the beam's first row."""
    rows = beam_rows(table, beam)
    if not len(rows):
        raise MSError(f"{table.name()}: no row for beam {beam} (FEED_ID {beam})")
    antenna = table.getcol("ANTENNA_ID")[rows]
    times, intervals = table.getcol("TIME")[rows], table.getcol("INTERVAL")[rows]
    pick = rows[0]
    for row, ant, t, dt in zip(rows, antenna, times, intervals, strict=True):
        if ant == 0 and (first_time is None or abs(first_time - t) < dt / 2):
            pick = row
            break
    offset = table.getcell("BEAM_OFFSET", int(pick))[0]
    return float(-np.degrees(offset[0])), float(np.degrees(offset[1]))


def read_evidence(ms) -> Evidence:
    """Read the evidence of `ms` (never opened for writing). MSError if it is not a readable ASKAP-like MS."""
    from casacore import tables as ct

    ms = Path(ms).absolute()
    if not (ms / "table.dat").is_file():
        raise MSError(f"{ms}: not a MeasurementSet (no table.dat)")
    try:
        with ct.table(str(ms), ack=False) as main:
            columns = frozenset(main.colnames())
            first_time = float(main.getcell("TIME", 0)) if main.nrows() else None
        beam = _beam_of(ms)
        with ct.table(str(ms / "FEED"), ack=False) as feed:
            feed_columns = frozenset(feed.colnames())
            offset = _beam_offset_deg(feed, beam, first_time)
            rows = beam_rows(feed, beam)
            receptor = float(np.degrees(feed.getcol("RECEPTOR_ANGLE")[rows, 0]).mean())
        feed_old = (ms / "FEED_OLD" / "table.dat").is_file()
        original = offset
        if feed_old:
            with ct.table(str(ms / "FEED_OLD"), ack=False) as old:
                original = _beam_offset_deg(old, beam, first_time)
        with ct.table(str(ms / "FIELD"), ack=False) as field:
            field_deg = direction_deg(field.getcol("PHASE_DIR")[0, 0])
        field_old_deg = None
        if (ms / "FIELD_OLD" / "table.dat").is_file():
            with ct.table(str(ms / "FIELD_OLD"), ack=False) as old:
                field_old_deg = direction_deg(old.getcol("PHASE_DIR")[0, 0])
        pointing_deg = None
        if (ms / "POINTING" / "table.dat").is_file():
            with ct.table(str(ms / "POINTING"), ack=False) as pointing:
                if pointing.nrows() and "TARGET" in pointing.colnames():
                    pointing_deg = direction_deg(np.asarray(pointing.getcell("TARGET", 0))[0])
    except MSError:
        raise
    except Exception as exc:  # casacore raises RuntimeError for damaged tables
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MSError(f"{ms}: not a readable ASKAP MeasurementSet ({first})") from None
    return Evidence(
        path=str(ms), beam=beam, columns=columns, feed_columns=feed_columns, field_old=field_old_deg is not None,
        feed_old=feed_old, receptor_deg=receptor, offset_deg=offset, original_offset_deg=original,
        field_deg=field_deg, field_old_deg=field_old_deg, pointing_deg=pointing_deg, record=read_record(ms),
        work_left=work_dir(ms).exists())


def read_record(ms) -> dict | None:
    """mpimager's completion record inside `ms`, None if absent; MSError if unreadable."""
    path = Path(ms) / RECORD_NAME
    try:
        with open(path) as fh:
            value = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MSError(f"{path}: unreadable ({exc}); remove it only if you know the MS state") from None
    return value if isinstance(value, dict) else {}


def record_entry(record: dict | None, column: str) -> dict | None:
    """The record's entry for a fix into `column`, None if there is none."""
    for entry in (record or {}).get("fixes", []):
        if entry.get("corrected_data_column") == column:
            return entry
    return None


def work_dir(ms) -> Path:
    """The working copy a fix of `ms` builds next to it (a leftover one means a fix was killed)."""
    ms = Path(ms).absolute()
    return ms.with_name(f".{ms.name}{WORK_SUFFIX}")


def _writable(path: Path) -> bool:
    """We may write `path`, and its owner has not marked it read-only (no write bit at all: honoured even by
    root, who os.access() lets write anything)."""
    return os.access(path, os.W_OK) and bool(os.stat(path).st_mode & 0o222)


def write_problem(ms) -> str | None:
    """Why a fix could not change `ms` (its directory, its parent or a table file it writes is read-only),
    or None."""
    ms = Path(os.path.realpath(ms))
    for directory in (ms.parent, ms):
        if not _writable(directory):
            return f"{directory} is not writable"
    for table in CHANGED_TABLES:
        for path in sorted((ms / table).iterdir()) if (ms / table).is_dir() else ():
            if path.is_file() and path.name.startswith("table.") and not _writable(path):
                return f"{path} is read-only"
    return None


# ---------------------------------------------------------------------------------------------- deciding (pure)


def classify(ev: Evidence, data_column: str = "DATA", corrected_data_column: str = "CORRECTED_DATA",
             fix_stokes_factor: bool = True) -> Verdict:
    """The state of an MS from its evidence `ev`, for FixMS writing `corrected_data_column` from `data_column`
    with `fix_stokes_factor` (a record of a fix made with other settings is FIXED_DIFFERENTLY).

    Never says RUNNING or INTERRUPTED (those are told from the lock and the working copy, by the step).
    """
    out = corrected_data_column in ev.columns
    ira = IRA in ev.feed_columns
    entry = record_entry(ev.record, corrected_data_column)
    sky_receptor = ev.receptor_deg is not None and abs(ev.receptor_deg - SKY_RECEPTOR_DEG) < 1e-6
    where = f"FIELD_OLD {'present' if ev.field_old else 'absent'}, FEED.{IRA} {'present' if ira else 'absent'}"
    if out and entry is not None:
        same = entry.get("data_column") == data_column and bool(entry.get("fix_stokes_factor")) == fix_stokes_factor
        if same:
            return Verdict(MSState.FIXED_BY_MPIMAGER, corrected_data_column, f"mpimager's {RECORD_NAME}")
        return Verdict(MSState.FIXED_DIFFERENTLY, None,
                       f"{RECORD_NAME} says {corrected_data_column} was made from {entry.get('data_column')} with "
                       f"fix_stokes_factor={entry.get('fix_stokes_factor')}")
    if out:
        if (ev.record or {}).get("fixes"):
            return Verdict(MSState.FOREIGN_COLUMN, None, f"{corrected_data_column} present, {RECORD_NAME} "
                           f"lists fixes into other columns only")
        if ira and ev.field_old:
            return Verdict(MSState.FIXED_UPSTREAM, corrected_data_column, f"{corrected_data_column} present, {where}")
        if ira and not ev.field_old and not any(ev.offset_deg) and sky_receptor:
            return Verdict(MSState.SPLIT_AFTER_FIX, corrected_data_column,
                           f"{corrected_data_column} present, {where}, BEAM_OFFSET zero")
        why = ("made by fix_ms_corrs but fix_ms_dir never ran (no FIELD_OLD, beam offset not zero)" if ira
               else "not made by FixMS (no FEED." + IRA + ")")
        return Verdict(MSState.FOREIGN_COLUMN, None, f"column {corrected_data_column} exists but was {why}")
    if ira and sky_receptor and INSTRUMENT_DATA in ev.columns:
        return Verdict(MSState.PREPROCESSED, data_column,
                       f"no {corrected_data_column}, {INSTRUMENT_DATA} present, {where}, RECEPTOR_ANGLE 45 deg")
    if ira and sky_receptor and not ev.field_old and not any(ev.offset_deg):
        return Verdict(MSState.SPLIT_AFTER_FIX, data_column,
                       f"no {corrected_data_column}, {where}, RECEPTOR_ANGLE 45 deg, BEAM_OFFSET zero")
    if ira:
        return Verdict(MSState.UNKNOWN, None,
                       f"FEED.{IRA} says the correlations were rotated, but there is no {corrected_data_column} "
                       f"and no {INSTRUMENT_DATA} ({where}, RECEPTOR_ANGLE {ev.receptor_deg:.1f} deg): "
                       f"{data_column} may or may not be in the sky frame")
    if sky_receptor and not ev.field_old and not any(ev.offset_deg) and ev.field_moved:
        return Verdict(MSState.UNKNOWN, None,
                       "FIELD is off the POINTING target with zero BEAM_OFFSET and RECEPTOR_ANGLE 45 deg but "
                       f"no FEED.{IRA}: a copy of a fixed MS that lost the record of its rotation, or a raw beam")
    detail = " (direction already fixed)" if ev.field_old or (ev.field_moved and not any(ev.offset_deg)) else ""
    return Verdict(MSState.RAW, corrected_data_column, f"no {corrected_data_column}, {where}{detail}")


REFUSED = (MSState.FOREIGN_COLUMN, MSState.FIXED_DIFFERENTLY, MSState.UNKNOWN)


def direction_wrong(ev: Evidence) -> bool:
    """FIELD is provably not at the beam direction, by the evidence `ev` (the beam's offset is recorded and
    FIELD is not there)."""
    error = ev.phase_centre_error_arcsec
    return error is not None and error > SAME_DIRECTION_ARCSEC


def needs_write(v: Verdict, ev: Evidence) -> bool:
    """A fix will change this MS, by its verdict `v` and evidence `ev`: it is raw, or (not refused) a killed
    fix left its copy or FIELD is provably not at the beam."""
    return v.state == MSState.RAW or (v.state not in REFUSED and (ev.work_left or direction_wrong(ev)))
