"""Stage 2, the inputs: command-line patterns to verified MeasurementSets (`discover`), obs-id patterns through a
data-handler file (`datahandler`), and each MS's read-only metadata (`msinfo`)."""
