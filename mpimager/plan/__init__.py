"""Stage 3, the plan (pure): config + MS metadata to the jobs of a run (`jobs`), and a Slurm allocation sized from
those jobs (`sbatch`)."""
