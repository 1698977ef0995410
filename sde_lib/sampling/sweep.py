r"""``Sweep``: a fixed-step sampler compiled once for a whole NFE sweep (every ``num_steps`` up to
a maximum, every time grid, every parameter set of one network)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from sde_lib._arrays import as_pytree_fn, pad_with_last
from sde_lib._validation import check_num_steps, check_rng, shape_checked
from sde_lib.sampling import grid
from sde_lib.sampling.driver import (
    EPS,
    NUM_STEPS,
    ScoreFn,
    check_common,
    check_shape,
    loop_steps,
)
from sde_lib.sampling.registry import SAMPLERS, check_grid, get_sampler

_GRID_ONLY_OPTIONS = ("time_grid", "chain")  # read by Sampler.grid, never by the step


class Sweep:
    r"""A fixed-step sampler compiled once for every ``num_steps <= max_num_steps``, every time
    grid and every parameter set of the same network: NFE sweeps without recompiling.

    ``Sweep(sde, shape, method, max_num_steps, eps, **options)(rng, score_fn, num_steps)`` returns
    what ``sample(rng, sde, score_fn, shape, method, num_steps, eps, **options)`` returns, the
    same samples for the same key (the step keys are the first ``K`` of ``jax.random.split(key,
    max_num_steps)``, which are ``split(key, K)`` under JAX's default
    ``jax_threefry_partitionable``). The grid (``Sampler.grid``) is computed on the host for each
    call and padded to ``max_num_steps`` entries; the compiled program takes it, ``num_steps``
    and ``score_fn`` as inputs and runs its first ``num_steps`` steps in a ``lax.fori_loop``
    whose trip count is an input, so a smaller ``num_steps`` costs its own steps only. It
    compiles again only for a new ``score_fn`` structure: ``models.get_score_fn`` gives a pytree
    whose leaves are the parameters (new parameters of the same network reuse the program); a
    plain function compiles once per function object.

    Not for the adaptive sampler (no grid) or a step on the SDE's ``K``-step discretization
    (``reverse_diffusion``, ``pc`` with its default ``reverse_diffusion`` predictor: their step
    depends on ``K`` itself); ``pc`` with ``predictor="euler_maruyama"`` or ``"none"`` sweeps.
    The loop has a traced trip count, so the samples are not differentiable in reverse mode
    (``sample``'s scan is).

    Args:
      sde, shape, method, eps, **options: as ``sample``; ``time_grid`` may be given again at
        each call.
      max_num_steps: the largest ``num_steps`` of the sweep (the padded grid's length).

    Raises:
      TypeError: as ``sample`` (``sde`` here, ``rng`` at the call).
      ValueError: as ``sample``; an adaptive or discretized method (named).
    """

    def __init__(self, sde, shape: Sequence[int], method: str = "euler_maruyama",
                 max_num_steps: int = NUM_STEPS, eps: float = EPS, **options):
        self.shape = check_shape(shape)
        self.sampler = get_sampler(method)
        check_num_steps("max_num_steps", max_num_steps)
        check_common(sde, max_num_steps, eps)
        self.options = self.sampler.check_options(options)
        if self.sampler.adaptive:
            raise ValueError(f"Sweep takes a fixed-step method; {method!r} is adaptive (a "
                             f"step-size controller chooses its steps, num_steps is not used)")
        if self.sampler.discretized(self.options):
            raise ValueError(f"method {method!r} with these options steps on the SDE's "
                             f"num_steps-step discretization, so its program depends on "
                             f"num_steps: use sample(), or for pc predictor='euler_maruyama'")
        self.sde, self.max_num_steps, self.eps = sde, int(max_num_steps), float(eps)
        self._step_options = tuple(sorted((k, v) for k, v in self.options.items()
                                          if k not in _GRID_ONLY_OPTIONS))

    def grid(self, num_steps: int, time_grid=None) -> grid.GridCoeffs:
        """The grid of ``num_steps`` steps padded to ``max_num_steps`` (host numpy arrays)."""
        check_num_steps("num_steps", num_steps)
        if num_steps > self.max_num_steps:
            raise ValueError(f"num_steps must be at most max_num_steps={self.max_num_steps}, "
                             f"got {num_steps}")
        options = self.options
        if time_grid is not None:  # every method Sweep takes has a time_grid
            options = {**options, "time_grid": check_grid("time_grid", time_grid)}
        _, coeffs = self.sampler.coefficients(self.sde, num_steps, self.eps, options)
        return jax.tree.map(lambda a: pad_with_last(a, self.max_num_steps), coeffs)

    def __call__(self, rng: jax.Array, score_fn: ScoreFn, num_steps: int,
                 time_grid=None) -> tuple[jax.Array, int]:
        """``(x, nfe)`` of ``num_steps`` steps (on ``time_grid`` if given), as ``sample``."""
        check_rng("rng", rng)
        coeffs = self.grid(num_steps, time_grid)
        x = _sweep_program(rng, self.sde, as_pytree_fn(score_fn), coeffs,
                           np.int32(num_steps), method=self.sampler.name,
                           step_options=self._step_options, shape=self.shape)
        return x, self.sampler.nfe(num_steps, self.options)


@functools.partial(jax.jit, static_argnames=("method", "step_options", "shape"))
def _sweep_program(rng, sde, score_fn, coeffs, num_steps, *, method, step_options, shape):
    step = SAMPLERS[method].step(sde, shape_checked(score_fn), dict(step_options))
    rng_prior, rng_steps = jax.random.split(rng)
    return loop_steps(step, rng_steps, sde.prior_sampling(rng_prior, shape), coeffs, num_steps)
