"""An MPI program that runs mpimager on a communicator of its own: `mpirun -n 4 python api_comm_driver.py MS_DIR OUT`.

COMM_WORLD is split in two: ranks 0-2 run `mpimager.run(..., comm=sub)` (its rank 0 coordinates, two workers),
rank 3 does its own work meanwhile. Every rank writes OUT/rank<R>.json: {"world", "sub", "exit", "states"}.
"""

import json
import sys
from pathlib import Path

from mpi4py import MPI

import mpimager

ms_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
world = MPI.COMM_WORLD
sub = world.Split(0 if world.Get_rank() < 3 else 1, world.Get_rank())
record = {"world": world.Get_rank(), "sub": sub.Get_size(), "exit": None, "states": None}
if world.Get_rank() < 3:
    config = {"wsclean": {"size": "64 64", "scale": "20asec", "niter": 50, "mgain": 0.8},
              "reduce": {"enabled": False}}
    result = mpimager.run(config, [str(ms_dir)], run_dir=out / "run", comm=sub)
    record.update(exit=result.exit_code, states=result.states)
(out / f"rank{world.Get_rank()}.json").write_text(json.dumps(record))
world.Barrier()
