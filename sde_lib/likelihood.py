r"""Likelihoods: the probability-flow ODE log-density, bits/dim, and the discrete DDPM bound.

* ``log_likelihood``: the instantaneous change of variables (Chen et al. 2018, Theorem 1) along
  the probability-flow ODE ``dx/dt = f~(x, t) = f(x, t) - g(t)^2 s(x, t) / 2`` (Song et al. 2021,
  Eq. 13 and Appendix D, Eqs. 39-40):

  .. math:: \log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot\tilde f(x_t, t)\,dt,

  integrated forward from ``x_eps = x`` with an adaptive diffrax solver, the divergence exact or
  estimated by Hutchinson's trick ``E_z[z^T J z]`` (Hutchinson 1989; Grathwohl et al. 2019).
* ``bits_per_dim`` / ``uniform_dequantize``: nats of a density of dequantized ``num_bins``-level
  data to bits per dimension of the discrete data (Theis et al. 2016; Ho et al. 2020, Section 4);
  the data's range and number of levels are always given, never assumed.
* ``ddpm_negative_elbo``: ``L_T + sum_{i >= 1} L_{i-1} + L_0`` of the DDPM chain (Ho et al. 2020,
  Eq. 5), every term computed (no sampling of ``i``), with a discretized (Eq. 13) or a continuous
  Gaussian decoder.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from sde_lib._arrays import as_pytree_fn, batch_coeff, pad_with_last, sum_except_batch
from sde_lib._validation import (
    check_choice,
    check_count,
    check_finite,
    check_floating,
    check_num_steps,
    check_positive,
    check_rng,
    check_sde,
    shape_checked,
)
from sde_lib.ddpm import (
    VARIANCES,
    DDPMChain,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
)
from sde_lib.divergence import ESTIMATES
from sde_lib.parameterization import get_parameterization
from sde_lib.sampling.adaptive import ODE_SOLVERS, adaptive_solve, check_stop
from sde_lib.sampling.grid import chain_index, evaluation_times

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

# The adaptive 5(4) pairs, and Euler and Heun with fixed steps only; classes and evaluations per
# step from the samplers' table (sampling.adaptive.ODE_SOLVERS).
SOLVERS = ("tsit5", "dopri5", "euler", "heun")
FIXED_STEP_SOLVERS = ("euler", "heun")


def _check_inputs(rng, sde, x: ArrayLike, need_rng: bool = True) -> jax.Array:
    """``x`` as a floating array ``(B, *D)``, after the checks of ``rng`` and ``sde`` (kinds:
    TypeError), ``x``'s shape (ValueError) and dtype (TypeError, as the losses) and, for a
    concrete ``x`` (checked on the host, also under a caller's jit), NaN or inf values."""
    if need_rng:
        check_rng("rng", rng)
    check_sde("sde", sde)
    if jnp.ndim(x) < 2 or jnp.shape(x)[0] < 1:
        raise ValueError(f"x must have shape (B, *D) with B >= 1 and at least one data axis, "
                         f"got shape {jnp.shape(x)}")
    return check_floating("x", check_finite("x", x))


# ----- probability-flow log-likelihood ---------------------------------------------------------

def _finite_result(name: str, value):
    """``value``, or (concrete; traced: within ``debug_checks()``) a ValueError: the inputs are
    finite, so a NaN or inf result comes from the score."""
    return check_finite(f"{name}'s result", value, ": x is finite, so score_fn returned NaN or "
                        "inf along the way")


def log_likelihood(rng: jax.Array, sde, score_fn: ScoreFn, x: ArrayLike, eps: float = 1e-5,
                   divergence: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                   solver: str = "tsit5", max_steps: int = 4096, num_steps: int | None = None,
                   time_grid: str | Sequence[float] = "logsnr", num_probes: int = 1,
                   per_probe: bool = False) -> tuple[jax.Array, jax.Array]:
    r"""Log-density of ``x`` under the probability-flow ODE of ``score_fn`` (Song et al. 2021,
    Appendix D).

    Solves, from ``t = eps`` to ``T``, the joint ODE (Eqs. 39-40)

    .. math:: \frac{d}{dt}\begin{pmatrix} x_t \\ \ell_t \end{pmatrix}
              = \begin{pmatrix} \tilde f(x_t, t) \\ \nabla\cdot\tilde f(x_t, t) \end{pmatrix},
              \qquad x_\epsilon = x,\ \ell_\epsilon = 0,

    with ``f~ = f - g^2 score / 2`` (``sde.reverse(score_fn, probability_flow=True)``), and returns
    ``log p_T(x_T) + l_T`` with ``log p_T = sde.prior_logp``. The whole batch is one ODE state
    (one step size, error norm over the batch, as score_sde), compiled end to end.

    With Hutchinson's estimate and ``num_probes = M`` probes per example, the ODE carries ``M``
    divergence integrals beside the one ``x_t``: each is an unbiased estimate of the
    exact-divergence value (the path ``x_t`` does not depend on the probes), independent of the
    others, so their mean has ``1 / M`` of one probe's variance, and their spread is its
    standard error: ``per_probe=True`` returns all ``M`` (``(M, B)``), from which
    ``logp.mean(0)`` and ``logp.std(0, ddof=1) / sqrt(M)`` are an example's estimate and its
    standard error (``benchmarks/likelihood.py --probes`` measures both). One example's
    log-density may need several probes; a mean over many examples averages them already (its
    standard error over the examples includes the probes' variance).

    Args:
      rng: key for the Hutchinson probes ``z = jax.random.rademacher(rng, x.shape, x.dtype)``
        (or ``normal``; ``(num_probes, *x.shape)`` with several), drawn once and held fixed for
        the whole solve, so that the result is an unbiased estimate of the exact-divergence
        value; ignored (may be ``None``) for ``"exact"``.
      sde: a forward SDE (``sde``, ``reverse``, ``prior_logp``, ``T``).
      score_fn: ``score_fn(x, t) -> (B, *D)``; examples must not interact.
      x: data ``(B, *D)``.
      eps: start time in ``(0, T)`` (Song et al. use ``1e-5``): the result is ``log p_eps(x)``.
      divergence: ``"exact"`` (trace of the Jacobian by ``D`` jvps, small ``D``), or Hutchinson's
        estimate with ``"rademacher"`` or ``"gaussian"`` probes (one jvp).
      rtol, atol: tolerances of diffrax's PID step-size controller (adaptive solves).
      solver: ``"tsit5"`` or ``"dopri5"`` (adaptive 5(4) Runge-Kutta pairs, or fixed steps with
        ``num_steps``), ``"euler"`` or ``"heun"`` (fixed steps only: ``num_steps`` required).
      max_steps: the adaptive solve fails (raises) beyond this many steps; with ``num_steps``,
        the largest ``num_steps`` (the fixed grid is padded to ``max_steps + 1`` times, so that
        every ``num_steps`` and ``time_grid`` up to it share one compilation: NFE sweeps do not
        recompile).
      num_steps: ``None`` (adaptive) or ``K``: ``K`` fixed steps between the times of
        ``time_grid`` from ``eps`` to ``T``, the likelihood at a fixed NFE (``K`` for Euler,
        ``2K`` for Heun); it converges to the adaptive value at the solver's order.
      time_grid: a ``sample`` grid kind (``"logsnr"``, ``"karras"``, ``"uniform"``,
        ``"quadratic"``) or ``K + 1`` decreasing times from ``T`` to ``eps``; only with
        ``num_steps``. The default, uniform in log-SNR, spaces the steps where the divergence
        changes: on the digits U-Net (eps = 1e-5) 10 / 25 / 50 Heun steps give 1.99 / 2.27 /
        2.29 bits/dim against the adaptive 2.32, where a grid uniform in t gives -51 / -17 / -6.
        A fixed-step value is not a bound: at low NFE it can fall below the converged one.
      num_probes: Hutchinson probes per example (``M >= 1``; 1 for ``"exact"``), averaged; the
        ``M`` jvps are one vmapped jvp, which shares the network's forward pass (the tangents
        cost about ``M`` times one probe's).
      per_probe: return each probe's estimate, ``(num_probes, B)``, instead of their mean.

    Returns:
      ``logp`` ``(B,)`` in nats (``(num_probes, B)`` with ``per_probe``), and ``nfe``: the number
      of evaluations of the ODE's vector field, each one forward-mode pass (jvp) through
      ``score_fn`` that gives the drift and its divergence together (``D`` vmapped jvps for
      ``"exact"``, ``num_probes`` for Hutchinson's). Counted from diffrax's step
      statistics: ``6 * steps + 1`` for the adaptive pairs (6 new stages per accepted or
      rejected step, and the first stage of the first step), ``K`` for Euler, ``2K`` for Heun.

    Raises:
      TypeError: ``rng`` that is not a ``jax.random`` key (unless ``"exact"``), ``sde`` that is
        not an SDE of sde_lib, integer ``x`` (scale it to floats first, as for the losses).
      ValueError: for an unknown ``divergence`` or ``solver``, ``num_probes`` not an integer
        >= 1 (or not 1 with ``"exact"``), ``eps`` outside ``(0, T)``,
        non-positive tolerances, ``max_steps`` or ``num_steps`` not in ``1 .. MAX_NUM_STEPS``,
        a fixed-step solver without ``num_steps``, ``num_steps > max_steps``, a bad
        ``time_grid``, ``x`` without a data axis or (concrete) holding NaN or inf, all before
        tracing; when traced, a ``score_fn`` whose output is not a floating array shaped like
        ``x``; an adaptive solve that stops early, naming a ``score_fn`` that is NaN or inf
        there or else ``max_steps`` (under a caller's ``jit``: diffrax's runtime error, or a
        ``checkify`` check within ``debug_checks()``).
    """
    check_choice("divergence", divergence, ESTIMATES)
    check_choice("solver", solver, SOLVERS)
    num_probes = check_count("num_probes", num_probes)
    if divergence == "exact" and num_probes != 1:
        raise ValueError(f"num_probes must be 1 with divergence='exact' (it has no probes), "
                         f"got {num_probes}")
    x = _check_inputs(rng, sde, x, need_rng=divergence != "exact")
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real)
            or not 0.0 < eps < sde.T):
        raise ValueError(f"eps must be a real number in the open interval (0, T) = "
                         f"(0, {sde.T}), got {eps!r}")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    max_steps = check_num_steps("max_steps", max_steps)
    if num_steps is not None:
        num_steps = check_num_steps("num_steps", num_steps)
        if num_steps > max_steps:
            raise ValueError(f"num_steps must be at most max_steps={max_steps} (the length "
                             f"of the padded grid), got {num_steps}")
        if not isinstance(time_grid, str) and len(time_grid) != num_steps + 1:
            raise ValueError(f"time_grid must be a grid kind or num_steps + 1 = {num_steps + 1} "
                             f"decreasing times from T to eps, got {len(time_grid)} times")
        ts = evaluation_times(time_grid, num_steps + 1, sde, eps)[::-1]
        if not (math.isclose(ts[0], eps) and math.isclose(ts[-1], sde.T)):
            raise ValueError(f"time_grid must run from T = {sde.T} to eps = {eps}, got "
                             f"{ts[-1]} .. {ts[0]}")
        ts = pad_with_last(ts, max_steps + 1)
        logp, nfe = _log_likelihood_fixed(rng, x, ts, np.int32(num_steps),
                                          as_pytree_fn(score_fn), sde=sde,
                                          divergence=divergence, solver=solver,
                                          num_probes=num_probes)
        return _finite_result("log_likelihood", _probes_out(logp, per_probe)), nfe
    if solver in FIXED_STEP_SOLVERS:
        raise ValueError(f"solver={solver!r} takes fixed steps: give num_steps")
    score_fn = as_pytree_fn(score_fn)
    logp, nfe, stop = _log_likelihood(rng, x, eps, score_fn, sde=sde, divergence=divergence,
                                      rtol=rtol, atol=atol, solver=solver, max_steps=max_steps,
                                      num_probes=num_probes)

    def field(t, y):  # built again only to name what failed, after a failed solve
        return _flow_with_divergence(rng, x, score_fn, sde, divergence, num_probes)(t, y)

    return _probes_out(check_stop(stop, field, max_steps, logp), per_probe), nfe


def _probes_out(logp: jax.Array, per_probe: bool) -> jax.Array:
    """``(M, B)`` per-probe log-densities as returned: all of them, or their mean ``(B,)``."""
    return logp if per_probe else jnp.mean(logp, axis=0)


def _flow_with_divergence(rng, x, score_fn, sde, divergence, num_probes):
    """The joint vector field ``(f~(x, t), div f~(x, t))`` of the probability-flow ODE, with
    ``score_fn``'s output checked (``shape_checked``); the divergence ``(M, B)``, one row per
    probe (one row for the exact one)."""
    B = x.shape[0]
    draw_probe, estimate = ESTIMATES[divergence]
    if draw_probe is None:
        z = None
    elif num_probes == 1:  # the draw of one probe per example, as it always was
        z = draw_probe(rng, x.shape, x.dtype)[None]
    else:
        z = draw_probe(rng, (num_probes, *x.shape), x.dtype)
    flow = sde.reverse(shape_checked(score_fn), probability_flow=True)

    def vector_field(t, state):
        t_batch = jnp.full((B,), t, x.dtype)

        def drift_fn(y):
            return flow.sde(y, t_batch)[0]

        if z is None:
            drift, div = estimate(drift_fn, state[0], None)
            div = div[None]
        else:  # one jvp, vmapped over the probes: the forward pass is shared
            drift, div = jax.vmap(lambda v: estimate(drift_fn, state[0], v),
                                  out_axes=(None, 0))(z)
        return drift.astype(x.dtype), div.astype(x.dtype)  # the state keeps the dtype of x

    return vector_field


def _initial_state(x, num_probes):
    return x, jnp.zeros((num_probes, x.shape[0]), x.dtype)


@functools.partial(jax.jit, static_argnames=("sde", "divergence", "rtol", "atol", "solver",
                                             "max_steps", "num_probes"))
def _log_likelihood(rng, x, eps, score_fn, *, sde, divergence, rtol, atol, solver, max_steps,
                    num_probes):
    """``(logp (M, B), nfe, stop)``: the adaptive solve from ``eps`` to ``T`` (the initial step,
    1% of the interval, is given: no evaluations are spent on selecting it); ``check_stop``
    reads ``stop`` outside this jit, where it can be concrete."""
    stop, nfe = adaptive_solve(
        _flow_with_divergence(rng, x, score_fn, sde, divergence, num_probes), eps, sde.T,
        _initial_state(x, num_probes), rtol=rtol, atol=atol, solver=solver,
        max_steps=max_steps)
    x_T, delta_logp = stop.y
    return sde.prior_logp(x_T)[None] + delta_logp, nfe, stop


@functools.partial(jax.jit, static_argnames=("sde", "divergence", "solver", "num_probes"))
def _log_likelihood_fixed(rng, x, ts, num_steps, score_fn, *, sde, divergence, solver,
                          num_probes):
    """The solver's steps between the first ``num_steps + 1`` of the times ``ts`` (a padded
    grid), in a ``lax.fori_loop`` with a traced trip count: diffrax's ``step`` as its
    ``diffeqsolve`` takes it with ``StepTo``, compiled once for every grid of ``ts``'s length."""
    field = _flow_with_divergence(rng, x, score_fn, sde, divergence, num_probes)
    term = diffrax.ODETerm(lambda t, y, args: field(t, y))
    ts = ts.astype(x.dtype)
    method = ODE_SOLVERS[solver][0]()
    y0 = _initial_state(x, num_probes)

    def body(k, carry):
        y, state = carry
        y, _, _, state, _ = method.step(term, ts[k], ts[k + 1], y, None, state, False)
        return y, state

    (x_T, delta_logp), _ = lax.fori_loop(0, num_steps, body,
                                         (y0, method.init(term, ts[0], ts[1], y0, None)))
    _, per_step, extra = ODE_SOLVERS[solver]
    return sde.prior_logp(x_T)[None] + delta_logp, per_step * num_steps + extra


# ----- bits per dimension ----------------------------------------------------------------------

def _bin_width(data_range: tuple[float, float], num_bins: int) -> float:
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range!r}")
    return (hi - lo) / check_count("num_bins", num_bins)


def uniform_dequantize(rng: jax.Array, k: ArrayLike, data_range: tuple[float, float],
                       num_bins: int) -> jax.Array:
    r"""Uniformly dequantized, rescaled data ``x = lo + (hi - lo) (k + u) / num_bins``,
    ``u ~ U[0, 1)`` per entry (Theis et al. 2016; score_sde's evaluation data).

    ``k`` holds integer levels ``0 .. num_bins - 1`` (e.g. uint8 pixels), any shape; ``x`` (float)
    has its shape and fills ``[lo, hi)``: level ``k`` owns the bin
    ``[lo + k w, lo + (k + 1) w)`` of width ``w = (hi - lo) / num_bins``. ``data_range`` and
    ``num_bins`` have no defaults: 8-bit images in ``[-1, 1]`` are ``(-1.0, 1.0), 256``.
    """
    w = _bin_width(data_range, num_bins)
    check_rng("rng", rng)
    k = jnp.asarray(k)
    u = jax.random.uniform(rng, k.shape, jnp.result_type(float))
    return data_range[0] + w * (k.astype(u.dtype) + u)


def bits_per_dim(logp: ArrayLike, dim: int, data_range: tuple[float, float],
                 num_bins: int) -> jax.Array:
    r"""Bits/dim of ``num_bins``-level data from the log-density ``logp`` (nats) of its uniformly
    dequantized, rescaled version ``x = lo + w (k + u)``, ``w = (hi - lo) / num_bins``.

    The probability of the discrete data is the mass of its bin (a cube of side ``w``); in bin
    units ``y = k + u = (x - lo) / w`` the cubes have side 1 and ``p_y(y) = p_x(x) w^D``. By
    Jensen, ``log P(k) = log E_u[p_y(k + u)] >= E_u[log p_y(k + u)]`` (Theis et al. 2016), so

    .. math:: \text{bpd} = -\frac{\log p_x(x) + D \log w}{D \ln 2}

    is an upper bound (in expectation over ``u``) on the bits/dim of the discrete data. For
    256 levels in ``[-1, 1]`` (``w = 1/128``) this adds 7 bits, in ``[0, 1]`` 8 bits (score_sde's
    ``offset = 7 - inverse_scaler(-1)``). Levels ``2k/255 - 1`` with bins of width ``2/255``
    centred on them (Ho et al. Eq. 13) are ``data_range=(-1 - 1/255, 1 + 1/255)``: offset
    ``log2(127.5)``.

    Args:
      logp: ``(B,)`` nats of ``x``, e.g. from ``log_likelihood``.
      dim: ``D``, the number of data dimensions (``prod`` of the data shape).
      data_range, num_bins: as in ``uniform_dequantize``; required, so no data gets the 8-bit
        offset by default (``-logp / (D ln 2)`` of a continuous density such as a Gaussian
        mixture's is its negative log-density in bits, not a bits/dim of discrete data).

    Returns:
      ``(B,)`` bits per dimension.
    """
    w = _bin_width(data_range, num_bins)
    dim = check_count("dim", dim)
    return -(jnp.asarray(logp) + dim * math.log(w)) / (dim * math.log(2.0))


# ----- discrete DDPM bound ---------------------------------------------------------------------

# decoder name -> elementwise log-likelihood (x, mean, logvar, num_bins) of L_0
DECODERS = {
    "discretized": discretized_gaussian_log_likelihood,
    "gaussian": lambda x, mean, logvar, num_bins: gaussian_log_likelihood(x, mean, logvar),
}
# decoder variance name -> log sigma_0^2 of the chain: beta_0, or beta_tilde_1 (Ho et al.'s code)
DECODER_LOG_VARIANCES = {
    "beta": lambda chain: jnp.log(chain.betas[0]),
    "beta_tilde": lambda chain: chain.posterior_log_variance_clipped[0],
}


class NegativeELBO(NamedTuple):
    """Terms of the DDPM negative ELBO (Ho et al. 2020, Eq. 5), each ``(B,)`` nats."""

    total: jax.Array
    prior: jax.Array  # L_T
    diffusion: jax.Array  # sum_{i >= 1} L_{i-1}
    decoder: jax.Array  # L_0
    bpd: jax.Array  # total / (D ln 2)


def ddpm_negative_elbo(rng: jax.Array, sde, score_fn: ScoreFn, x: ArrayLike,
                       variance: str = "beta", decoder: str = "discretized",
                       decoder_variance: str | None = None, num_bins: int = 256,
                       num_steps: int | None = None,
                       time_grid: str | Sequence[float] = "uniform") -> NegativeELBO:
    r"""The negative ELBO ``L_T + sum_{i=1}^{N-1} L_{i-1} + L_0`` of the DDPM chain of ``sde``
    (Ho et al. 2020, Eq. 5 and Section 3.3), every term evaluated (a ``lax.scan`` over ``i``), each
    with one draw ``x_i ~ q(x_i | x_0)``.

    With ``num_steps = K`` it is the bound of the ``K``-step chain on the strided sub-sequence of
    chain indices ``i_0 < ... < i_{K-1}`` that ``sample(method="ddpm_ancestral", num_steps=K,
    time_grid=time_grid)`` steps through (Nichol & Dhariwal 2021, Sec. 4: the respaced chain
    ``alpha_bar'_k = alpha_bar_{i_k}``, ``beta'_k = 1 - alpha_bar'_k / alpha_bar'_{k-1}``, the
    model evaluated at the times ``(i_k + 1) T / N``): the ancestral sampler's own bits/dim at
    NFE ``K`` (for ``DiscreteVPSDE`` its kernels exactly; a VP SDE's sampler reads the continuous
    marginal at the same times, which differs from the chain's ``alpha_bar`` by ``O(1/N)``).

    The model: ``eps(x_i) = -sigma_{t_i} score_fn(x_i, t_i)`` at ``t_i = (i + 1) T / N`` with
    ``sigma_{t_i}`` from ``sde.marginal_coeffs``, the conversion ``models.get_score_fn`` inverts,
    so an eps network's output is the eps of the bound (for ``DiscreteVPSDE``
    ``sigma_{t_i} = sqrt(1 - alpha_bar_i)``);
    reverse kernels ``N(p_mean(x_i, eps), sigma_i^2)`` (Eq. 11) with ``sigma_i^2 = beta_i`` or
    ``beta_tilde_i`` (``variance``), and the decoder ``p(x_0 | x_{i=0})`` a Gaussian of mean
    ``p_mean`` and variance given by ``decoder_variance``: ``"beta"`` is ``beta_0``, the variance of
    the first forward step; ``"beta_tilde"`` is ``beta_tilde_1`` (Ho et al.'s code; ``beta_tilde_0
    = 0``). ``decoder="discretized"``: the mass of the data's 8-bit bin (Eq. 13, data on the levels
    ``2k / (num_bins - 1) - 1``); ``"gaussian"``: the density, for continuous data.

    Consistency (continuous data): where the data density is smooth on the scale
    ``sqrt(1 - alpha_bar_i)``, the true reverse kernel ``q(x_{i-1} | x_i)`` is nearly
    ``N(x_i / sqrt(alpha_i), beta_i)``. With ``variance = "beta"`` and the decoder variance
    ``beta_0`` (the same rule at ``i = 0``) every kernel matches it, and with the exact score the
    bound closes as ``N`` grows. Near the data the linear schedule's noise variance
    ``1 - alpha_bar_i ~ (i + 1) beta_0`` grows by ``O(1)`` factors per step at any ``N``, and
    there ``beta_tilde_i / beta_i ~ i / (i + 1)``: the ``beta_tilde`` kernels and the decoder
    variance ``beta_tilde_1 ~ beta_0 / 2`` are too narrow and cost
    ``(D/2) sum_i (1/i - ln(1 + 1/i)) + (D/2)(1 - ln 2) -> (D/2)(gamma + 1 - ln 2) ~ 0.44 D``
    nats that do not vanish as ``N -> infinity``. For 8-bit data, point masses on the scale of
    the first steps, the posterior given ``x_0`` dominates near the data and this analysis does
    not apply; Ho et al.'s code uses ``beta_tilde_1`` for the decoder with either ``variance``
    (``decoder_variance="beta_tilde"``).

    Args:
      rng: key for the draws of ``x_i``.
      sde: an SDE with a DDPM chain (``discrete_betas``: ``VPSDE``, ``CosineVPSDE``,
        ``DiscreteVPSDE``).
      score_fn: ``score_fn(x, t) -> (B, *D)``.
      x: data ``(B, *D)``.
      variance: ``"beta"`` or ``"beta_tilde"``, the reverse variances for ``i >= 1``.
      decoder: ``"discretized"`` or ``"gaussian"``.
      decoder_variance: ``"beta"`` or ``"beta_tilde"``; defaults to ``variance``.
      num_bins: levels of the discretized decoder.
      num_steps: ``None`` (the whole chain) or ``K`` in ``1 .. N``, the strided chain's steps
        (every ``K`` and ``time_grid`` share one compilation: the chain is padded to ``N``
        entries and its ``K`` terms run with a traced trip count).
      time_grid: the sampler's ``time_grid`` for the strided chain (a grid kind of
        ``sample`` or a decreasing sequence of ``K`` times); only with ``num_steps``.

    Returns:
      ``NegativeELBO`` of ``(B,)`` arrays; ``bpd = total / (D ln 2)`` is bits/dim of the discrete
      data for the discretized decoder (no offset), of the density for the Gaussian one (convert
      with ``bits_per_dim`` for dequantized data).

    Raises:
      TypeError: ``rng`` that is not a ``jax.random`` key, ``sde`` that is not an SDE of
        sde_lib, integer ``x``.
      ValueError: an unknown ``variance``, ``decoder`` or ``decoder_variance``, ``num_bins <
        1``, an SDE without a DDPM chain, ``num_steps`` outside ``1 .. N``, ``x`` without a data
        axis or (concrete) holding NaN or inf, all before tracing; when traced, a ``score_fn``
        whose output is not a floating array shaped like ``x``.
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("decoder", decoder, DECODERS)
    decoder_variance = variance if decoder_variance is None else decoder_variance
    check_choice("decoder_variance", decoder_variance, DECODER_LOG_VARIANCES)
    x = _check_inputs(rng, sde, x)
    num_bins = check_count("num_bins", num_bins)
    if not sde.has_chain:
        raise ValueError(f"sde must have a DDPM chain (has_chain: VPSDE, CosineVPSDE, "
                         f"DiscreteVPSDE); got {type(sde).__name__}")
    if num_steps is not None:
        num_steps = check_num_steps("num_steps", num_steps)
        if num_steps > sde.N:
            raise ValueError(f"num_steps must be in 1 .. N = {sde.N} (the sde's chain), got "
                             f"{num_steps}")
    grid_key = time_grid if isinstance(time_grid, str) else tuple(float(t) for t in time_grid)
    chain, times, steps = _chain_of(sde, num_steps, grid_key)
    out = _negative_elbo(rng, x, as_pytree_fn(score_fn), times, chain,
                         np.int32(steps), sde=sde, variance=variance, decoder=decoder,
                         decoder_variance=decoder_variance, num_bins=num_bins)
    _finite_result("ddpm_negative_elbo", out.total)
    return out


@functools.lru_cache(maxsize=32)
def _chain_of(sde, num_steps: int | None, time_grid) -> tuple[DDPMChain, jax.Array, int]:
    """The chain of ``sde`` (strided to ``K = num_steps`` on ``time_grid``) and the times of
    its indices, increasing, both padded to the whole chain's ``N`` entries, and ``K``; built
    (and its betas checked) once per setting, outside jit. Every ``K`` and grid then share one
    compilation of the bound: its terms run over the first ``K`` entries."""
    N = sde.N
    if num_steps is None:
        return DDPMChain.from_sde(sde), jnp.asarray(np.arange(1, N + 1) * (sde.T / N)), N
    times = evaluation_times(time_grid, num_steps, sde, sde.T / N)
    index = chain_index(sde, times)[::-1]  # increasing
    alpha_bar = np.cumprod(1.0 - np.asarray(sde.discrete_betas, np.float64))[index]
    betas = 1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])
    times = (pad_with_last(index, N) + 1) * (sde.T / N)
    return DDPMChain(betas).padded(N), jnp.asarray(times), num_steps


@functools.partial(jax.jit, static_argnames=("sde", "variance", "decoder", "decoder_variance",
                                             "num_bins"))
def _negative_elbo(rng, x0, score_fn, times, chain, num_steps, *, sde, variance, decoder,
                   decoder_variance, num_bins):
    """The bound of the first ``num_steps`` (traced) entries of ``chain`` (a padded chain);
    its terms in a ``lax.fori_loop`` with a traced trip count."""
    to_eps = get_parameterization("score").to_eps
    score_fn = shape_checked(score_fn)
    B = x0.shape[0]

    def eps_model(i, key):
        """``x_i ~ q(x_i | x_0)`` and the model's ``eps(x_i)`` at the index ``i`` (a scalar)."""
        i_batch = jnp.full((B,), i)
        # in x0's dtype: the chain's coefficients are float64 under x64, and a float32 model
        # fed float64 inputs would compute (slowly) in float64
        x_i = chain.q_sample(x0, i_batch, jax.random.normal(key, x0.shape, x0.dtype)
                             ).astype(x0.dtype)
        t_i = jnp.full((B,), times[i], x0.dtype)
        return i_batch, x_i, to_eps(score_fn(x_i, t_i), x_i, *sde.marginal_coeffs(t_i))

    def add_term(i, total):
        i_batch, x_i, eps = eps_model(i, jax.random.fold_in(rng, i))
        term = chain.vb_term(x0, x_i, i_batch, eps, variance, discretized=False)
        return total + term.astype(total.dtype)

    diffusion = lax.fori_loop(1, num_steps, add_term, jnp.zeros((B,), x0.dtype))

    i_batch, x_first, eps = eps_model(0, jax.random.fold_in(rng, 0))
    decoder_logvar = DECODER_LOG_VARIANCES[decoder_variance](chain)
    decoder_nll = -sum_except_batch(DECODERS[decoder](
        x0, chain.p_mean(x_first, i_batch, eps), batch_coeff(jnp.full((B,), decoder_logvar), x0),
        num_bins))
    prior = chain.prior_kl(x0, last=num_steps - 1)
    total = prior + diffusion + decoder_nll
    dim = math.prod(x0.shape[1:])
    return NegativeELBO(total, prior, diffusion, decoder_nll, total / (dim * math.log(2.0)))
