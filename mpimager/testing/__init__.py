"""Synthetic data for the demo and the tests: ASKAP-like and plain MeasurementSets (`synth`), and a whole ASKAP
field whose beams see the sky through their primary beams (`field`)."""
