r"""The sampler registry: ``Sampler`` values, their option checks, ``register`` and ``get_sampler``.

``SAMPLERS`` is the one place where a method name becomes a value. Each method family module
(``ancestral.py``, ``ode.py``, ...) defines its step, its grid and its ``Sampler`` and calls
``register`` next to them; ``import sde_lib.sampling`` imports every family, so the registry is
complete once the package is imported. Nothing outside the registry tests a method name.

A step is ``step(key, x, c) -> (x_next, x_mean)``: ``x`` is ``(B, *D)`` at time ``c.t`` (a
``grid.GridCoeffs`` of scalars), the step goes to ``c.t_next`` and returns the new state and its
noiseless mean (the driver returns the mean of the last step). A stochastic step draws its noise
as ``jax.random.normal(key, x.shape)`` (``step_noise``; the exact Gaussian laws of
``sde_lib.evaluation`` rely on it); in place of a key it also takes that draw itself, a float
array of ``x``'s shape (the increments of one Brownian path shared by several runs,
``sde_lib.evaluation.coupled_error``). Notation in the steps: ``s = score_fn(x, t)``, the step
size ``h = t - t_next > 0``, the reverse drift ``f(x, t) - g(t)^2 s`` (Song et al. 2021, Eq. 6)
and the probability-flow drift ``f(x, t) - g(t)^2 s / 2`` (Eq. 13).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sde_lib._validation import check_choice
from sde_lib.sampling import grid


def check_chain(name, value):
    """``None`` (the SDE's chain where it has one), ``True`` or ``False``."""
    if value not in (None, True, False):
        raise ValueError(f"{name} must be None, True or False, got {value!r}")
    return value


def check_clip(name, value):
    """``False``/``None`` (no clipping), ``True`` (``[-1, 1]``) or a range ``(lo, hi)``."""
    if value is None or value is False:
        return None
    if value is True:
        return (-1.0, 1.0)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or not lo < hi:
        raise ValueError(f"{name} must be False, True (the range [-1, 1]) or a pair (lo, hi) "
                         f"with lo < hi, got {value!r}")
    return (lo, hi)


def check_grid(name, value):
    """A grid kind of ``grid.TIME_GRIDS`` or a sequence of times (checked against
    ``num_steps`` by ``grid.evaluation_times``)."""
    if isinstance(value, str):
        return check_choice(name, value, grid.TIME_GRIDS)
    return tuple(float(v) for v in value)


def _one_per_step(num_steps: int, options: dict) -> int:
    return num_steps


def heun_nfe(num_steps: int, options: dict) -> int:
    """Two evaluations per step, one in the last (to ``t = 0``, an Euler step)."""
    return 2 * num_steps - 1


def step_times(x, t):
    """The scalar time ``t`` as the ``(B,)`` array of ``x``'s batch."""
    return jnp.full((x.shape[0],), t, x.dtype)


def step_noise(key, x):
    """The step's standard normal draw: from ``key``, or ``key`` itself when it is a float array
    (a given draw)."""
    if jnp.issubdtype(key.dtype, jnp.floating):
        return key.astype(x.dtype)
    return jax.random.normal(key, x.shape, x.dtype)


def continuous_coefficients(sde, num_steps: int, eps: float, options: dict):
    """The grid of every method without one of its own: ``num_steps`` times of
    ``options["time_grid"]`` from ``T`` to ``eps``, with the SDE's marginal coefficients."""
    times = grid.evaluation_times(options["time_grid"], num_steps, sde, eps)
    return grid.continuous_grid(sde, times)


def bind_sde_step(step):
    """The step builder of a step that reads the SDE and the score: ``step`` with both bound."""
    return lambda sde, score_fn, options: functools.partial(step, sde=sde, score_fn=score_fn)


def _discretization(sde, num_steps):
    """``sde.with_num_steps(K)``, refused where its DDPM chain has a beta >= 1."""
    sde_k = sde.with_num_steps(num_steps)
    if sde_k.has_chain and not float(jnp.max(sde_k.discrete_betas)) < 1.0:
        raise ValueError(f"num_steps={num_steps} is too few for reverse_diffusion on this SDE: "
                         f"its {num_steps}-step DDPM chain has a beta >= 1")
    return sde_k


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered sampler: a value that knows its options, its steps and their cost.

    A fixed-step sampler is two functions: its grid, computed on the host from ``num_steps``,
    and its step, which reads ``num_steps`` only through the grid (except where ``discretized``:
    then it runs on the SDE's ``K``-step discretization). So ``Sweep`` runs every ``num_steps``
    and time grid of such a sampler with one compiled program.

    Attributes:
      name: the registry key.
      options: ``{option: (default, check)}``; ``check(name, value)`` returns the checked value
        or raises ValueError naming the option.
      grid: fixed-step samplers: ``grid(sde, num_steps, eps, options) -> GridCoeffs`` of ``(K,)``
        arrays (``sde`` is ``sde.with_num_steps(K)`` where ``discretized``).
      step: fixed-step samplers: ``step(sde, score_fn, options) -> step(key, x, c)``, the step
        function that ``scan_steps`` runs over the grid (a ``multistep.Multistep`` for the
        multistep methods).
      nfe: fixed-step samplers: ``nfe(num_steps, options)``, the number of score evaluations.
      solve: adaptive samplers (a step-size controller chooses the steps, as in diffrax):
        ``solve(x_T, sde, score_fn, eps, options) -> (x, nfe)``; ``num_steps`` is not used.
      affine: fixed-step samplers whose step, for a score affine in ``x`` (the exact score of
        Gaussian data), is an affine map of ``x`` plus a scaled draw of
        ``jax.random.normal(key, x.shape)``, so that ``sde_lib.evaluation.gaussian_sampler_law``
        propagates its output law exactly; ``False`` for ``pc``, whose Langevin step size depends
        on the norms of the score and the noise, for the multistep samplers (their step carries
        earlier model outputs; ``deterministic`` ones get their law from the whole map) and
        for ``edm_stochastic`` (its noise enters before the Heun step).
      deterministic: fixed-step samplers: ``deterministic(options)``, whether the sampler is a
        deterministic map of its prior draw (no noise after it), so that
        ``sde_lib.evaluation.flow_log_density`` gives its output density by change of variables.
      discretized: ``discretized(options)``, whether the step runs on ``sde.with_num_steps(K)``
        (reverse diffusion, score_sde's discretization of the SDE), so that it depends on ``K``
        beyond its grid and ``Sweep`` cannot take ``K`` as an input.
    """

    name: str
    options: dict
    grid: Callable | None = None
    step: Callable | None = None
    nfe: Callable[[int, dict], int] = _one_per_step
    solve: Callable | None = None
    affine: bool = True
    deterministic: Callable[[dict], bool] = lambda options: False
    discretized: Callable[[dict], bool] = lambda options: False

    @property
    def adaptive(self) -> bool:
        """Whether a step-size controller picks the steps (``num_steps`` unused)."""
        return self.solve is not None

    def check_options(self, options: dict) -> dict:
        """All options with defaults filled in; ValueError for unknown or bad ones."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"unknown options {unknown} for method {self.name!r}; it takes "
                             f"{sorted(self.options) or 'no options'}")
        return {name: check(name, options[name]) if name in options else default
                for name, (default, check) in self.options.items()}

    def coefficients(self, sde, num_steps: int, eps: float, options: dict):
        """Fixed-step samplers: ``(sde_k, coeffs)``, the SDE the step runs on
        (``sde.with_num_steps(K)`` where ``discretized``, else ``sde``) and the grid of
        ``num_steps`` steps (a constant, also under a caller's jit); ``options`` as
        ``check_options`` returns them."""
        with jax.ensure_compile_time_eval():
            if self.discretized(options):
                if options.get("time_grid", "uniform") != "uniform":
                    raise ValueError(f"time_grid must be 'uniform' for {self.name} with the "
                                     f"reverse_diffusion predictor (it runs on the SDE's own "
                                     f"discretization grid)")
                sde = _discretization(sde, num_steps)
            return sde, self.grid(sde, num_steps, float(eps), options)

    def build(self, sde, score_fn, num_steps: int, eps: float, options: dict):
        """Fixed-step samplers: ``(step, coeffs)``, the step with ``score_fn`` bound and the
        grid of ``num_steps`` steps (``coefficients``)."""
        sde, coeffs = self.coefficients(sde, num_steps, eps, options)
        return self.step(sde, score_fn, options), coeffs

    def num_steps_for(self, nfe: int, **options) -> int:
        """The most steps whose cost is at most ``nfe`` score evaluations (at least 1); ``1``
        for an adaptive sampler, whose cost its tolerances decide."""
        if self.adaptive:
            return 1
        opts = self.check_options(options)
        k = 1
        while self.nfe(k + 1, opts) <= nfe:
            k += 1
        return k


SAMPLERS: dict[str, Sampler] = {}


def register(sampler: Sampler) -> Sampler:
    """Adds ``sampler`` to ``SAMPLERS`` under its name and returns it; ValueError if a sampler
    of that name is registered already (a family module registers each of its methods once)."""
    if not isinstance(sampler, Sampler):
        raise TypeError(f"register takes a Sampler, got {type(sampler).__name__}")
    if sampler.name in SAMPLERS:
        raise ValueError(f"a sampler named {sampler.name!r} is registered already")
    SAMPLERS[sampler.name] = sampler
    return sampler


def get_sampler(method: str) -> Sampler:
    """The registered ``Sampler`` called ``method``; ValueError listing the valid names."""
    check_choice("method", method, tuple(SAMPLERS))
    return SAMPLERS[method]
