"""Compare MeasurementSets exactly: every table (main and subtables), every column, every cell; and the files.

`table_contents(ms)` reads everything casacore can read into plain Python values; `assert_same_ms(a, b)`
asserts two MSs hold the same tables, columns and values (NaN equal to NaN), with paths that name the MS
replaced by a placeholder so an MS can be compared with a copy fixed elsewhere. `file_digests(ms)` is the
byte-level view (every file's size and SHA-1), for "restored exactly as it was".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import casacore.tables as ct
import numpy as np

# Columns that differ between two runs by nature: when a HISTORY row was written and the command line of the
# process that wrote it (a test's child process or pytest)
VOLATILE = {("HISTORY", "TIME"), ("HISTORY", "CLI_COMMAND")}


def _tables(ms: Path) -> list[str]:
    return ["", *sorted(p.name for p in ms.iterdir() if (p / "table.dat").is_file())]


def _normalise(value, ms: Path):
    if isinstance(value, str):
        return value.replace(str(ms.with_name(f".{ms.name}.mpimager-fixms")), "<MS>").replace(str(ms), "<MS>")
    if isinstance(value, (list, tuple)):
        return [_normalise(v, ms) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v, ms) for k, v in value.items()}
    return value


def table_contents(ms) -> dict:
    """{table: {"keywords": ..., column: values}} of every table of `ms` (the main table is "")."""
    ms = Path(ms).absolute()
    contents = {}
    for name in _tables(ms):
        with ct.table(str(ms / name), ack=False) as t:
            cols = {"#rows": t.nrows(), "#columns": sorted(t.colnames())}
            for col in t.colnames():
                if (name, col) in VOLATILE:
                    continue
                if t.nrows() == 0 or not t.iscelldefined(col, 0):
                    cols[col] = None
                    continue
                try:
                    values = t.getcol(col)
                except RuntimeError:  # variable-shape arrays: cell by cell
                    values = [t.getcell(col, r) for r in range(t.nrows())]
                cols[col] = _normalise(values.tolist() if isinstance(values, np.ndarray) and values.dtype == object
                                       else values, ms)
            contents[name] = cols
    return contents


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same_ms(got, want) -> None:
    """Every table, column and cell of `got` equals `want` (an MS, or its table_contents; NaN equal to NaN);
    names the first difference."""
    a, b = table_contents(got), want if isinstance(want, dict) else table_contents(want)
    assert sorted(a) == sorted(b), f"tables differ: {sorted(a)} != {sorted(b)}"
    for table in a:
        assert a[table].keys() == b[table].keys(), (table, sorted(a[table]), sorted(b[table]))
        for column in a[table]:
            assert _equal(a[table][column], b[table][column]), f"{table or 'main'}.{column} differs"


def file_digests(ms) -> dict:
    """{relative path: (size, sha1)} of every file under `ms`."""
    ms = Path(ms)
    out = {}
    for root, _dirs, files in os.walk(ms):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(ms))] = (path.stat().st_size, hashlib.sha1(path.read_bytes()).hexdigest())
    return out


def disk_bytes(ms) -> int:
    """Bytes the files of `ms` take (sizes, not blocks)."""
    return sum(size for size, _ in file_digests(ms).values())
