"""Helpers of the fault tests: which processes of a run are still alive, its one error line, its products.

A run started with `tagged_env(tag_dir)` passes MPIMAGER_TEST_RUN_TAG to every process it starts (mpirun, the
ranks, WSClean, FixMS, env_file's bash: each inherits its parent's environment). `run_processes` finds the
live ones by that tag, and adds every live process whose parent or process group is one of them (a child
that cleared its environment): after a run ends, the list must be empty.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TAG = "MPIMAGER_TEST_RUN_TAG"


def tagged_env(tag_dir: Path) -> dict[str, str]:
    return {TAG: str(tag_dir)}


def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def run_processes(tag_dir: Path, settle: float = 2.0) -> list[str]:
    """'pid cmdline' of every live process of the run tagged `tag_dir` (waits up to `settle` s for exits)."""
    marker = f"{TAG}={tag_dir}".encode()
    end = time.time() + settle
    while True:
        tagged, table = set(), {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            st = _stat(pid)
            if st is None or st[0] in ("Z", "X"):
                continue
            table[int(pid)] = st
            try:
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    tagged.add(int(pid))
            except OSError:
                continue
        found = set(tagged)
        for pid, (_, ppid, pgrp) in table.items():
            if ppid in tagged or pgrp in tagged:
                found.add(pid)
        found.discard(os.getpid())
        if not found or time.time() > end:
            break
        time.sleep(0.1)
    out = []
    for pid in sorted(found):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append(f"{pid} {cmd.strip()}")
    return out


def error_lines(result) -> list[str]:
    """The lines mpimager itself wrote to stderr ('mpimager: ...'), apart from warnings."""
    return [line for line in result.stderr.splitlines() if line.startswith("mpimager:")]


def products(run_dir: Path) -> dict[str, int]:
    """basename -> size of the products the run directory's manifest lists."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    return {os.path.basename(p): os.path.getsize(p) for p in manifest["products"]}
