"""Stage 3, the planner (pure): config + MS metadata to the jobs of a run (`jobs`), and a Slurm allocation sized
from those jobs (`sbatch`). (Not `plan`: that name is the API's `mpimager.plan(...)`.)"""
