"""The gather step: channel images -> common beam -> PSF-matched, frequency-stacked cubes.

Modules: options (ReduceOptions), beams (beam algebra, common beam), kernel (uv-plane Gaussian, NaN-aware
convolution), fitsio (channel headers and planes), plan (grouping into cubes, per-plane decisions),
cube (cube files and side files), run (orchestration over ranks), receptor (pol axis from an MS), cli.

Importing this package is cheap (the config loader imports ReduceOptions); the rest loads on use.
"""

from mpimager.reduce.options import ReduceOptions

__all__ = ["ReduceOptions", "Product", "reduce_images", "pol_axis_from_ms", "Beam"]


def __getattr__(name):
    if name in ("Product", "reduce_images"):
        from mpimager.reduce import run
        return getattr(run, name)
    if name == "pol_axis_from_ms":
        from mpimager.reduce.receptor import pol_axis_from_ms
        return pol_axis_from_ms
    if name == "Beam":
        from mpimager.reduce.beams import Beam
        return Beam
    raise AttributeError(name)
