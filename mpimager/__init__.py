"""mpimager: image many MeasurementSets with WSClean over MPI and gather PSF-matched cubes.

The package layout follows the run's data flow:
config -> inputs/msinfo -> plan -> (mpiqueue -> runner -> fixms_step/wsclean/containers) -> reduce.
"""

__version__ = "0.1.0"
