"""A whole run across the ranks: every check before any job (`prepare`), rank 0 coordinating and the workers
executing (`session`), the lines printed as it goes (`progress`), and which job may still start near the end of a
Slurm allocation (`allocation`)."""
