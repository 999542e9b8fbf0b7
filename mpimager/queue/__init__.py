"""Stage 4, the queue: hands planned tasks to free MPI ranks as they become free. Knows nothing of WSClean.

Owns the only `mpi4py` import of the package (`world.mpi`, lazy: importing `mpimager.queue` neither needs nor
initialises MPI). Rank 0 is the master, ranks 1..N-1 are workers; with a single rank (no MPI launcher) the same
scheduler runs every task in-process, one at a time, with the same outcomes and events.

The public layer, in the shape of mpi4py.futures (a thin layer over a private engine):
- values (`tasks`): `Task`, `Placement`, `Outcome`, `Event`; the outcome states `OK`, `FAILED`, `SKIPPED`,
  `INTERRUPTED` (`states.Status`);
- collective entry points (`_engine`): `run_tasks` (the queue), `root_first` (start-up: rank 0 plans, every
  rank fails alike); `stop_message` (a stop request sent to this rank);
- sleeping collectives (`protocol`): `barrier`, `bcast`, `gather`;
- the communicator (`world`): `world`, `rank`, `size`, `host_name`, `launched`, `library_version`,
  `abort_if_parallel`, `ranks_on_node`, `SelfComm`;
- `idle_ranks` (`scheduler`): the worker ranks `max_per_host` leaves idle.

Inside: `scheduler` (pure placement rules over an injected host map, no MPI), `protocol` (every message
between ranks, sender next to receiver, and `Failure`: the one way an exception crosses ranks), `backoff` (the
one probe-and-sleep wait every wait uses), `_engine` (the one loop, serial and parallel).
"""

from mpimager.queue._engine import root_first, run_tasks
from mpimager.queue.protocol import barrier, bcast, gather, stop_message
from mpimager.queue.scheduler import idle_ranks
from mpimager.queue.tasks import FAILED, INTERRUPTED, OK, SKIPPED, Event, Outcome, Placement, Task
from mpimager.queue.world import (
    SelfComm,
    abort_if_parallel,
    host_name,
    launched,
    library_version,
    rank,
    ranks_on_node,
    size,
    world,
)

__all__ = ["FAILED", "INTERRUPTED", "OK", "SKIPPED", "Event", "Outcome", "Placement", "SelfComm", "Task",
           "abort_if_parallel", "barrier", "bcast", "gather", "host_name", "idle_ranks", "launched",
           "library_version", "rank", "ranks_on_node", "root_first", "run_tasks", "size", "stop_message", "world"]
