"""Samplers: one ``lax.scan`` driver over a time grid and one small step function per method.

``sample(rng, sde, score_fn, shape, method=..., num_steps=..., eps=1e-3, **options)``; the
methods are the values of ``SAMPLERS`` (``registry.py``). Each method family is one module that
owns its steps, its grid and its registration; importing this package imports every family, in
the order ``SAMPLERS`` lists them (the order of the comparison tables and plots).
"""

# isort: off
from sde_lib.sampling import ancestral, reverse_sde, ode, adaptive, ddim, pc  # noqa: F401
from sde_lib.sampling import dpm_solver, unipc, edm  # noqa: F401
# isort: on
from sde_lib.sampling.driver import build_sampler, loop_steps, sample, scan_steps
from sde_lib.sampling.grid import TIME_GRIDS, GridCoeffs, evaluation_times
from sde_lib.sampling.pc import PREDICTORS
from sde_lib.sampling.registry import SAMPLERS, Sampler, get_sampler, register
from sde_lib.sampling.sweep import Sweep

__all__ = ["GridCoeffs", "PREDICTORS", "SAMPLERS", "Sampler", "Sweep", "TIME_GRIDS",
           "build_sampler", "evaluation_times", "get_sampler", "loop_steps", "register",
           "sample", "scan_steps"]
