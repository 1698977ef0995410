"""Samplers: one ``lax.scan`` driver over a time grid and one small step function per method.

``sample(rng, sde, score_fn, shape, method=..., num_steps=..., eps=1e-3, **options)``; the
methods and their options are listed in ``SAMPLERS`` and in ``sample``'s docstring.
"""

from sde_lib.sampling.driver import (
    PREDICTORS,
    SAMPLERS,
    Sampler,
    Sweep,
    build_sampler,
    get_sampler,
    loop_steps,
    sample,
    scan_steps,
)
from sde_lib.sampling.grid import TIME_GRIDS, GridCoeffs, evaluation_times

__all__ = ["GridCoeffs", "PREDICTORS", "SAMPLERS", "Sampler", "Sweep", "TIME_GRIDS",
           "build_sampler", "evaluation_times", "get_sampler", "loop_steps", "sample",
           "scan_steps"]
