# Sourced by the scripts: MPI settings for a root shell on a small machine.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# more ranks than cores is normal here (rank 0 mostly waits)
export OMPI_MCA_rmaps_base_oversubscribe=1
