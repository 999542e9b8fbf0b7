"""The communicator: the package's only `mpi4py` import, and what a rank asks of MPI about itself.

`mpi()` imports `mpi4py.MPI` on first use (which initialises MPI: 0.4 s and more), so importing this module
neither needs nor initialises MPI. A process no MPI launcher started (`launched()` False) gets a `SelfComm`
(one rank, MPI never initialised), so a plain `mpimager ...` runs serially at once. Here too: the rank's
host name (Slurm's node name inside a job step), the MPI library's version, how many ranks share the node,
and the one MPI abort of the package (a bug among several ranks).
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: variables an MPI launcher sets in each rank's environment (Open MPI, PMIx/srun, MPICH/Intel hydra, MVAPICH)
_LAUNCH_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD", "MV2_COMM_WORLD_SIZE",
                   "MPI_LOCALNRANKS")


def mpi() -> Any:
    """The `mpi4py.MPI` module, imported (and MPI initialised) on first use: the package's only mpi4py import."""
    from mpi4py import MPI

    return MPI


class SelfComm:
    """The communicator of a process no MPI launcher started: one rank, and MPI never initialised
    (which costs 0.4 s and more), so a plain `mpimager ...` runs serially at once."""

    def Get_rank(self) -> int:
        """0: the only rank."""
        return 0

    def Get_size(self) -> int:
        """1: this process alone."""
        return 1

    def bcast(self, obj, root=0):
        """`obj` itself: there is no other rank (`root` is this one)."""
        return obj

    def gather(self, obj, root=0):
        """`[obj]`: every rank's `obj`, gathered on `root` (this one)."""
        return [obj]

    def Barrier(self) -> None:
        """Nothing to wait for."""


def launched() -> bool:
    """Was this process started by an MPI launcher (mpirun, mpiexec, srun with PMI/PMIx)?"""
    return any(k in os.environ for k in _LAUNCH_MARKERS)


def world():
    """MPI.COMM_WORLD (initialised on first use) under an MPI launcher, else a SelfComm."""
    if not launched():
        return SelfComm()
    return mpi().COMM_WORLD


def rank(comm=None) -> int:
    """This process's rank in `comm` (default: `world()`)."""
    return (comm or world()).Get_rank()


def size(comm=None) -> int:
    """The number of ranks of `comm` (default: `world()`)."""
    return (comm or world()).Get_size()


def library_version() -> str:
    """mpi4py's version and the MPI library's version line (provenance). A process no launcher started
    does not initialise MPI for it (MPI allows asking before MPI_Init)."""
    import mpi4py

    if not launched() and "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
    return f"mpi4py {mpi4py.__version__}; {mpi().Get_library_version().splitlines()[0].strip()}"


def abort_if_parallel(code: int) -> None:
    """End every rank at once with exit `code` when this process fails with a bug (not a planned error) among
    several: the others would otherwise wait for it until the job's time limit."""
    if launched() and "mpi4py.MPI" in sys.modules:
        MPI = mpi()
        if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
            MPI.COMM_WORLD.Abort(code)


def ranks_on_node(comm) -> int:
    """How many ranks of `comm` share this node (1 for None or a SelfComm)."""
    if comm is None or comm.Get_size() == 1:
        return 1
    local = comm.Split_type(mpi().COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def host_name() -> str:
    """This rank's host: Slurm's name for the node inside a Slurm job step (SLURMD_NODENAME: the name that
    `srun --nodelist` takes), else MPI's processor name (the host name; `socket.gethostname()` without MPI)."""
    if os.environ.get("SLURMD_NODENAME"):
        return os.environ["SLURMD_NODENAME"]
    if not launched():
        import socket

        return socket.gethostname()
    return mpi().Get_processor_name()
