"""Read-only metadata of a MeasurementSet, read with python-casacore (never opened for writing).

What planning needs: spectral windows and channel frequencies, field name, ASKAP beam (FEED1),
telescope, antenna mount, columns (CORRECTED_DATA?), whether FixMS already ran, size on disk, and for an
ASKAP-like MS the evidence its FixMS state is told from (`msstate.Evidence`) and whether FixMS could write it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mpimager.errors import MSError
from mpimager.inputs import msstate
from mpimager.inputs.msstate import RECORD_NAME


@dataclass(frozen=True)
class SpectralWindow:
    id: int
    num_chan: int
    freq_min_hz: float
    freq_max_hz: float
    ref_freq_hz: float


@dataclass(frozen=True)
class MSInfo:
    path: str  # absolute
    spws: tuple[SpectralWindow, ...]
    field: str
    beam: int | None  # FEED1 of the main table when it is single-valued
    telescope: str
    mount: str
    columns: frozenset[str]
    n_rows: int
    size_bytes: int  # of the main table (see size_on_disk)
    fixms_record: bool  # mpimager's FixMS completion record is present
    fixms_markers: bool  # FIELD_OLD + FEED.INSTRUMENT_RECEPTOR_ANGLE: FixMS ran (by anyone)
    fixms_evidence: msstate.Evidence | None = None  # None: not readable as one ASKAP beam (see _error)
    fixms_evidence_error: str | None = None
    fixms_write_problem: str | None = None  # why FixMS could not change this MS (read-only), or None

    @property
    def n_channels(self) -> int:
        return sum(s.num_chan for s in self.spws)

    @property
    def basename(self) -> str:
        return os.path.basename(self.path)

    @property
    def stem(self) -> str:
        return os.path.splitext(self.basename)[0]

    def has_column(self, name: str) -> bool:
        """Whether the main table has the column `name`."""
        return name in self.columns


def is_table_dir(path: Path) -> bool:
    """Whether `path` is a casacore table directory (holds a table.dat)."""
    return (path / "table.dat").is_file()


def size_on_disk(path: Path) -> int:
    """Bytes of the files directly in the MS directory `path` (the main table, the visibilities: all but a
    sliver of an MS; subtables not walked)."""
    with os.scandir(path) as it:
        return sum(e.stat().st_size for e in it if e.is_file())


def read_msinfo(path: str | os.PathLike) -> MSInfo:
    """Metadata of the MS at `path`; MSError naming the path when it is missing or not a readable MS."""
    p = Path(path).absolute()
    if not p.exists():
        raise MSError(f"{p}: no such MeasurementSet")
    if not p.is_dir() or not is_table_dir(p):
        raise MSError(f"{p}: not a MeasurementSet (no table.dat)")
    if not os.access(p, os.R_OK | os.X_OK):
        raise MSError(f"{p}: cannot be read (permission denied)")
    from casacore.tables import table

    def sub(name):
        return table(str(p / name), readonly=True, ack=False)

    try:
        with table(str(p), readonly=True, ack=False) as t:
            columns = frozenset(t.colnames())
            n_rows = t.nrows()
            if not {"DATA_DESC_ID", "ANTENNA1", "UVW"} <= columns:
                raise MSError(f"{p}: a casacore table but not a MeasurementSet (no DATA_DESC_ID/ANTENNA1/UVW)")
            keywords = t.getkeywords()
            feeds = set(t.getcol("FEED1", 0, min(n_rows, 1000))) if n_rows else set()
        with sub("SPECTRAL_WINDOW") as s:
            freqs = [s.getcell("CHAN_FREQ", i) for i in range(s.nrows())]
            refs = s.getcol("REF_FREQUENCY")
        spws = tuple(SpectralWindow(i, len(f), float(min(f)), float(max(f)), float(refs[i]))
                     for i, f in enumerate(freqs))
        with sub("FIELD") as f:
            field = str(f.getcell("NAME", 0)) if f.nrows() else ""
        with sub("OBSERVATION") as o:
            telescope = str(o.getcell("TELESCOPE_NAME", 0)) if o.nrows() else ""
        with sub("ANTENNA") as a:
            mount = str(a.getcell("MOUNT", 0)) if a.nrows() else ""
        feed_cols = set()
        if "FEED" in keywords:
            with sub("FEED") as fd:
                feed_cols = set(fd.colnames())
    except MSError:
        raise
    except Exception as exc:  # casacore raises RuntimeError for damaged tables
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MSError(f"{p}: not a readable MeasurementSet ({first})") from None
    if not spws:
        raise MSError(f"{p}: the MeasurementSet has no spectral window")
    evidence, evidence_error = None, None
    try:
        evidence = msstate.read_evidence(p)
    except MSError as exc:
        evidence_error = str(exc)
    return MSInfo(
        path=str(p), spws=spws, field=field, beam=int(next(iter(feeds))) if len(feeds) == 1 else None,
        telescope=telescope, mount=mount, columns=columns, n_rows=n_rows, size_bytes=size_on_disk(p),
        fixms_record=(p / RECORD_NAME).is_file(),
        fixms_markers=is_table_dir(p / "FIELD_OLD") and "INSTRUMENT_RECEPTOR_ANGLE" in feed_cols,
        fixms_evidence=evidence, fixms_evidence_error=evidence_error, fixms_write_problem=msstate.write_problem(p),
    )
