"""Linear mosaics: a field's PSF-matched beams -> one primary-beam-corrected cube, MFS image and weights.

Modules, in data-flow order: inputs (a beam's cube, its weights and restoring beams; the refusals),
primarybeam (Gaussian presets or the user's images), grid (the field's SIN grid and each beam's box on it),
combine (reprojection and sum(w P I) / sum(w P^2)), products (names, headers, tables, beam log), run (the
orchestration over ranks). The `[mosaic]` options (MosaicOptions) are mpimager.config.mosaic.

Importing this package is cheap (the config loader imports MosaicOptions); the rest loads on use.
"""

from mpimager.config.mosaic import MosaicOptions

__all__ = ["MosaicOptions", "mosaic_cubes", "mosaic_paths"]


def __getattr__(name):
    if name == "mosaic_cubes":
        from mpimager.mosaic.run import mosaic_cubes
        return mosaic_cubes
    if name == "mosaic_paths":
        from mpimager.planner.products import mosaic_paths
        return mosaic_paths
    raise AttributeError(name)
