r"""The driver: every fixed-step sampler is one ``lax.scan`` over a time grid with one step.

``sample`` draws ``x_T`` from the prior, scans ``step(key_k, x, c_k)`` over the ``K`` grid points
(``grid.py``) and returns the noiseless mean of the last step and the number of score
evaluations; an adaptive sampler (``Sampler.adaptive``) replaces the scan by its solve. The
methods are values of ``registry.SAMPLERS``, each defined and registered in its family module.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from sde_lib._validation import check_num_steps, check_rng, check_sde, shape_checked
from sde_lib.sampling import grid
from sde_lib.sampling.multistep import Multistep
from sde_lib.sampling.registry import get_sampler

NUM_STEPS = 1000  # the default number of steps of ``sample`` and ``Sweep``'s ``max_num_steps``
EPS = 1e-3  # the default last evaluation time of the continuous grids (VP)

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple ``(B, *D)`` of positive ints with at least one data axis, or
    ValueError."""
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if (not shape or len(shape) < 2 or
            not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
                    for n in shape)):
        raise ValueError(f"shape must be (B, *D) with positive integers and at least one data "
                         f"axis, got {shape!r}")
    return tuple(int(n) for n in shape)


def check_common(sde, num_steps, eps):
    """TypeError unless ``sde`` is an SDE of sde_lib; ValueError unless ``num_steps`` is in
    ``1 .. MAX_NUM_STEPS`` and ``eps`` is in ``(0, T)``."""
    check_sde("sde", sde)
    check_num_steps("num_steps", num_steps)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < sde.T:
        raise ValueError(f"eps must be a real number in (0, T={sde.T}), got {eps!r}")


def sample(rng: jax.Array, sde, score_fn: ScoreFn, shape: Sequence[int],
           method: str = "euler_maruyama", num_steps: int = NUM_STEPS, eps: float = EPS,
           **options) -> tuple[jax.Array, jax.Array | int]:
    r"""Draws samples of the model ``score_fn`` by running its reverse process from the prior.

    ``method`` is a name of ``SAMPLERS`` (``sde_lib/sampling/registry.py``; each method's
    options, defaults and checks are in its family module, and ``docs/samplers.md`` compares
    them):

    * ``ddpm_ancestral``: ancestral sampling (Ho et al. 2020, Algorithm 2) on the DDPM chain.
    * ``euler_maruyama``: Euler-Maruyama on the reverse SDE (Song et al. 2021, Eq. 6).
    * ``reverse_diffusion``: the reverse of the SDE's ``num_steps``-step discretization (Eq. 46).
    * ``pf_ode_euler``: Euler steps of the probability-flow ODE (Eq. 13).
    * ``pf_ode_heun``: Heun steps of the probability-flow ODE (order 2).
    * ``pf_ode_adaptive``: an adaptive diffrax solve of the ODE; ``num_steps`` is not used.
    * ``ddim``: DDIM (Song, Meng & Ermon 2021, Eq. 12); ``eta = 1`` is ancestral sampling.
    * ``pc``: predictor-corrector with Langevin corrector steps (Song et al. 2021, Alg. 1, 5).
    * ``dpm_solver_pp``: DPM-Solver++ multistep of order 1-3 (Lu et al. 2022b, Algorithm 2).
    * ``dpm_solver_2s``: DPM-Solver++(2S), singlestep second order (Lu et al. 2022b, Alg. 1).
    * ``unipc``: UniPC, the UniP-2 predictor with the UniC corrector (Zhao et al. 2023).
    * ``edm_heun``: EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1).
    * ``edm_stochastic``: EDM's stochastic sampler with churn (Karras et al. 2022, Alg. 2).

    Every coefficient a step reads comes from ``sde.marginal_coeffs`` at its grid times, the same
    ``(alpha_t, sigma_t)`` that ``models.get_score_fn`` used to turn the network output into
    ``score_fn``, so an eps network's output reaches ``ddpm_ancestral`` and ``ddim`` unchanged.
    The chain-based methods end at the chain's first time ``T / N`` (``eps`` is not used);
    ``reverse_diffusion`` ends at ``T / num_steps``. The last step goes to ``t = 0`` and returns
    its noiseless mean. ``rng`` is split into the prior draw and one key per step, so the same key
    gives the same samples; under ``jax.pmap`` pass a per-device key. Wrap the call in
    ``jax.jit`` to compile it once for repeated use.

    Args:
      rng: a ``jax.random`` key.
      sde: a ``LinearSDE`` (VP, cosine VP, sub-VP, VE, OU, Brownian motion).
      score_fn: ``score_fn(x (B, *D), t (B,)) -> (B, *D)``.
      shape: ``(B, *D)``.
      method: one of ``SAMPLERS``.
      num_steps: number of steps ``K >= 1``.
      eps: the last evaluation time of the continuous grids, in ``(0, T)``.
      **options: the method's options (``SAMPLERS[method].options``).

    Returns:
      ``x`` ``(B, *D)`` and ``nfe``, the number of calls of ``score_fn`` (an int, a scalar array
      for ``pf_ode_adaptive``).

    Raises:
      TypeError: ``rng`` that is not a ``jax.random`` key, ``sde`` that is not an SDE of
        sde_lib; before anything is traced.
      ValueError: an unknown method (the valid ones are listed) or option, ``num_steps`` not an
        integer in ``1 .. MAX_NUM_STEPS`` (``1e6``: a longer grid is refused before it is
        allocated), ``eps`` outside ``(0, T)``, a bad shape or option value, before anything is
        traced; when traced, a ``score_fn`` whose output is not a floating array shaped like
        ``x``; ``pf_ode_adaptive``: a solve that stops early, naming a ``score_fn`` that returned
        NaN or inf or else ``max_steps`` (under ``jit``, diffrax's runtime error, or a
        ``checkify`` check within ``debug_checks()``).
    """
    check_rng("rng", rng)
    shape = check_shape(shape)
    sampler = get_sampler(method)
    check_common(sde, num_steps, eps)
    opts = sampler.check_options(options)
    score_fn = shape_checked(score_fn)
    if not sampler.adaptive:
        step, coeffs = sampler.build(sde, score_fn, num_steps, eps, opts)
    rng_prior, rng_steps = jax.random.split(rng)
    x_T = sde.prior_sampling(rng_prior, shape)
    if sampler.adaptive:
        return sampler.solve(x_T, sde, score_fn, float(eps), opts)
    return scan_steps(step, rng_steps, x_T, coeffs), sampler.nfe(num_steps, opts)


def build_sampler(sde, score_fn: ScoreFn, method: str, num_steps: int, eps: float = EPS,
                  **options) -> tuple[Callable, grid.GridCoeffs, int]:
    """The pieces ``sample`` scans, for the fixed-step methods (not the adaptive ones).

    Returns:
      ``step(key, x, c) -> (x_next, x_mean)``, the grid coefficients ``c`` (a
      ``grid.GridCoeffs`` of ``(K,)`` arrays) and the NFE. ``scan_steps(step, rng, x_T,
      coeffs)`` runs them;
      ``inverse.py`` wraps ``step`` with a projection.

    Raises:
      ValueError: as ``sample``, and for an adaptive method.
    """
    sampler = get_sampler(method)
    check_common(sde, num_steps, eps)
    if sampler.adaptive:
        raise ValueError(f"build_sampler takes a fixed-step method; {method!r} is adaptive "
                         f"(its steps are chosen by a step-size controller)")
    opts = sampler.check_options(options)
    step, coeffs = sampler.build(sde, shape_checked(score_fn), num_steps, eps, opts)
    return step, coeffs, sampler.nfe(num_steps, opts)


def _loop_inputs(step, rng, x, coeffs):
    """The grid in ``x``'s dtype, one key per grid entry, the initial carry and the step
    function (a ``Multistep`` carries its state, ``init(x)``, instead of ``x``)."""
    coeffs = jax.tree.map(lambda a: jnp.asarray(a).astype(x.dtype), coeffs)
    keys = jax.random.split(rng, coeffs.t.shape[0])
    state, fn = (step.init(x), step.step) if isinstance(step, Multistep) else (x, step)
    return coeffs, keys, state, fn


def scan_steps(step, rng: jax.Array, x: jax.Array, coeffs: grid.GridCoeffs) -> jax.Array:
    """The driver: ``lax.scan`` of ``step(key_k, x, c_k)`` over the grid; the last step's mean.
    A ``multistep.Multistep`` carries its state (``init(x)``) instead of ``x``."""
    coeffs, keys, state, fn = _loop_inputs(step, rng, x, coeffs)

    def body(carry, inputs):
        key, c = inputs
        return fn(key, carry[0], c), None

    (_, x_mean), _ = lax.scan(body, (state, x), (keys, coeffs))
    return x_mean


def loop_steps(step, rng: jax.Array, x: jax.Array, coeffs: grid.GridCoeffs,
               num_steps: jax.Array) -> jax.Array:
    """``scan_steps`` over the first ``num_steps`` (an int, traced or not) entries of a grid
    of ``M >= num_steps`` entries, in a ``lax.fori_loop``; step ``k`` takes key ``k`` of
    ``jax.random.split(rng, M)``."""
    coeffs, keys, state, fn = _loop_inputs(step, rng, x, coeffs)

    def body(k, carry):
        return fn(keys[k], carry[0], jax.tree.map(lambda a: a[k], coeffs))

    _, x_mean = lax.fori_loop(0, num_steps, body, (state, x))
    return x_mean
