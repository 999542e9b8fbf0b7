"""The planner (pure): config + MS metadata to the jobs of a run (`jobs`), the names of the products they
write (`products`; WSClean's own in `wsclean.names`), and a Slurm allocation sized
from those jobs (`sbatch`). (Not `plan`: that name is the API's `mpimager.plan(...)`.)"""
