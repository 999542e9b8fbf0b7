"""Stage 4, the queue: the only user of mpi4py; hands planned jobs to free worker ranks (`mpiqueue`)."""
