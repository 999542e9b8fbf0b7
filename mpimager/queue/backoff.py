"""The one way a rank of this package waits: probe, then sleep longer the longer it has waited.

Open MPI's blocking receive spins a core (measured here: `comm.recv` held 2.2 s of CPU over a 3 s wait), and
so do its blocking collectives; on a node shared with WSClean that steals a core. So every wait of the
package (rank 0 for replies, workers for tasks and for `root_first`'s verdict, `barrier`, `bcast`,
`gather`) goes through `wait`: it probes, and sleeps a fraction (`_SLEEP_FRACTION`) of the time already
waited, up to `_MAX_SLEEP`, so latency stays a small fraction of the wait and an idle rank costs almost no CPU
(measured: 0.01 s of CPU per rank over a 3 s wait). mpi4py.futures waits the same way (probe + backoff).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from mpimager.queue.world import mpi

T = TypeVar("T")

_MAX_SLEEP = 0.05   # longest sleep between two probes, seconds
_SLEEP_FRACTION = 0.125  # a sleep is at most this fraction of the time waited so far
_YIELD_FOR = 1e-4   # for the first 0.1 ms of a wait, poll again at once (a quick reply is common)


def wait(poll: Callable[[], T | None]) -> T:
    """Call `poll()` until it returns something other than None (returned), sleeping more the longer it takes.

    A sleep is never less than the kernel's timer slack (about 60 us here), so the first 0.1 ms polls without
    sleeping: a worker's next task or a trivial task's reply is often that close (the bench shows it)."""
    began = time.monotonic()
    while True:
        got = poll()
        if got is not None:
            return got
        waited = time.monotonic() - began
        time.sleep(0 if waited < _YIELD_FOR else min(_MAX_SLEEP, _SLEEP_FRACTION * waited))


def recv(comm, source: int, tag: int) -> tuple[int, Any]:
    """Wait (asleep) for a message from `source` (a rank or MPI.ANY_SOURCE) with `tag` on `comm`; return
    (source rank, the object sent)."""
    status = mpi().Status()
    message = wait(lambda: comm.improbe(source, tag, status))
    return status.Get_source(), message.recv()


def wait_for(request) -> None:
    """Wait (asleep) until the non-blocking MPI `request` (e.g. `comm.Ibarrier()`) completes."""
    wait(lambda: True if request.Test() else None)
