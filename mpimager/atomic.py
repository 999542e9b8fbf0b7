"""Writing a file so that no reader ever sees half of it: a temporary beside it, then one rename.

The temporary is `.NAME.PID.tmp` in the same directory (so the rename never crosses file systems, and two
processes writing the same file never share a temporary). `durable=True` also fsyncs the file and its
directory before returning (the journal's completion records; a machine crash keeps them).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str, *, mode: int | None = None, durable: bool = False) -> Path:
    """Replace `path` by a file holding `text` (UTF-8) in one step.

    path: the file to write; its directory must exist.
    text: the whole content.
    mode: permission bits for the file (default: the umask's).
    durable: fsync the file and its directory before returning.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path
