"""Stage 2, the inputs: command-line patterns to verified MeasurementSets (`discover`), obs-id patterns through a
data-handler file (`datahandler`), each MS's read-only metadata (`msinfo`) and, for an ASKAP beam, what FixMS has
done to it, told from the evidence it carries (`msstate`), and the angular distance between two directions on the
sky (`sky`)."""
