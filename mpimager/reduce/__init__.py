"""The gather step: channel images and cubes -> common beam -> PSF-matched, frequency-stacked cubes.

Modules: beams (beam algebra, common beam), kernel (uv-plane Gaussian, NaN-aware
convolution), fitsio (channel images and cubes' planes: headers, beams, one plane at a time), plan
(grouping into cubes, per-plane decisions), cube (cube files and side files), beamlog (the ECSV beam
log; reading ours and RACS-tools'), run (orchestration over ranks), receptor (pol
axis from an MS), cli.

Its options are `config.reduce.ReduceOptions` and its file names `planner.products`. Importing this package is cheap;
the rest loads on use.
"""

from mpimager.config.reduce import ReduceOptions

__all__ = ["Beam", "Product", "ReduceOptions", "pol_axis_from_ms", "reduce_images"]


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
