"""Synthetic data for the demo and the tests: ASKAP-like and plain MeasurementSets (`synth`)."""
