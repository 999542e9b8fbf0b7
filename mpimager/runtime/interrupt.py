"""A run's stop requests: SIGTERM/SIGINT/SIGHUP (stop now) and SIGUSR1 (Slurm's warning: start nothing more).

Owns the process's handlers for these signals while a run goes on (`install` / `uninstall`). A handler only
records the request; the loops that wait check it (`requested`, `draining`): the process supervisor
(mpimager.runtime.process) ends its job's process group and raises `Interrupted`, the queue stops
dispatching. A second SIGTERM/SIGINT, REPEAT_S or more after the first, raises `Interrupted` at once,
wherever the process is (a user's second Ctrl-C); closer repeats are one request delivered several ways
(Slurm signals srun and every task; mpirun sends its own after a user's).
`add_poller` lets the session plug in other sources of a request (a stop message from another MPI rank):
each poller is called by `requested` and returns a reason or None.

Exit code of an interrupted run: EXIT_INTERRUPTED (4, mpimager.errors), on every rank.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from mpimager.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DRAIN_SIGNALS = (signal.SIGUSR1,)
DRAIN = "drain:"  # a reason starting with this asks for no new job, not for a stop
REPEAT_S = 10.0  # a stop signal this soon after the first is the same request

_state: dict[str, str | None] = {"stop": None, "drain": None}
_first: list[float] = []  # when the first stop signal came
_pollers: list[Callable[[], str | None]] = []
_previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL/SIG_IGN or None


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    if signum in DRAIN_SIGNALS:
        _state["drain"] = _state["drain"] or name
        return
    if _state["stop"] is not None:
        if _first and time.monotonic() - _first[0] >= REPEAT_S:
            raise Interrupted(f"interrupted by a second {name}")
        return
    _first[:] = [time.monotonic()]
    _state["stop"] = name


def install() -> None:
    """Handle the stop and drain signals in this process (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS + DRAIN_SIGNALS:
        if sig not in _previous:
            _previous[sig] = signal.signal(sig, _handler)


def uninstall() -> None:
    """Restore the handlers `install` replaced and forget requests and pollers."""
    for sig, old in _previous.items():
        signal.signal(sig, old)
    _previous.clear()
    _pollers.clear()
    _first.clear()
    _state.update(stop=None, drain=None)


def request(reason: str) -> None:
    """Record a request from elsewhere (a drain when `reason` starts with DRAIN)."""
    if reason.startswith(DRAIN):
        _state["drain"] = _state["drain"] or reason[len(DRAIN):]
    elif _state["stop"] is None:
        _state["stop"] = reason


def add_poller(poll: Callable[[], str | None]) -> None:
    """`poll()` is asked by `requested` for a request from another source (a reason, or None)."""
    _pollers.append(poll)


def requested() -> str | None:
    """Why the run must stop now (the signal's name, or a poller's reason), None if it must not."""
    if _state["stop"] is None:
        for poll in list(_pollers):
            reason = poll()
            if reason:
                request(reason)
    return _state["stop"]


def signalled() -> str | None:
    """The request a signal to this process made (a stop reason, or DRAIN + the signal's name), else None."""
    if _state["stop"] is not None and _state["stop"].startswith("SIG") and " " not in _state["stop"]:
        return _state["stop"]
    return DRAIN + _state["drain"] if _state["drain"] and _state["drain"].startswith("SIG") else None


def draining() -> str | None:
    """Why no new job may start (SIGUSR1's name; also when a stop is requested), None otherwise."""
    return requested() or _state["drain"]
