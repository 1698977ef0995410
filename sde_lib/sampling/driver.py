r"""``sample``: every sampler is one ``lax.scan`` over a time grid with one small step function.

The driver draws ``x_T`` from the prior, scans ``step(key_k, x, c_k)`` over the ``K`` grid
points (``grid.py``) and returns the noiseless mean of the last step and the number of score
evaluations. An adaptive sampler (``Sampler.adaptive``: a step-size controller picks the steps)
replaces the scan by its solve; ``pf_ode_adaptive`` is a diffrax solve from ``T`` to ``eps``
followed by the same last Euler step to ``t = 0`` as ``pf_ode_euler``.

The one place where a method name becomes a value is ``SAMPLERS`` (``get_sampler``): each
``Sampler`` knows its options (checked before anything is traced), its step and grid, its NFE and
whether it is adaptive; nothing outside the registry tests a method name.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sde_lib._checks import check_num_steps
from sde_lib.ddpm import VARIANCES
from sde_lib.sampling import grid, steps

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")
# diffrax solvers: (class, new evaluations of the vector field per step, extra evaluations of the
# first step). The FSAL pairs reuse the last stage as the next first one, so their first step
# evaluates one more; Heun and Euler do not. Euler has no error estimate: fixed steps only (the
# likelihood's); the adaptive sampler takes the others.
ODE_SOLVERS = {"tsit5": (diffrax.Tsit5, 6, 1), "dopri5": (diffrax.Dopri5, 6, 1),
               "bosh3": (diffrax.Bosh3, 3, 1), "heun": (diffrax.Heun, 2, 0),
               "euler": (diffrax.Euler, 1, 0)}
ADAPTIVE_ODE_SOLVERS = ("tsit5", "dopri5", "bosh3", "heun")


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _check_nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    return float(value)


def _check_pos(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive real number, got {value!r}")
    return float(value)


def _check_chain(name, value):
    if value not in (None, True, False):
        raise ValueError(f"{name} must be None, True or False, got {value!r}")
    return value


def _check_clip(name, value):
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


def _check_grid(name, value):
    if isinstance(value, str):
        return _check_choice(name, value, grid.TIME_GRIDS)
    return tuple(float(v) for v in value)  # checked against num_steps in evaluation_times


def _one_per_step(num_steps: int, options: dict) -> int:
    return num_steps


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered sampler: a value that knows its options, its steps and their cost.

    Attributes:
      name: the registry key.
      options: ``{option: (default, check)}``; ``check(name, value)`` returns the checked value
        or raises ValueError naming the option.
      build: fixed-step samplers: ``build(sde, score_fn, num_steps, eps, options) ->
        (step, coeffs)``, the step function and the grid that ``scan_steps`` runs.
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
    """

    name: str
    options: dict
    build: Callable | None = None
    nfe: Callable[[int, dict], int] = _one_per_step
    solve: Callable | None = None
    affine: bool = True
    deterministic: Callable[[dict], bool] = lambda options: False

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


def _continuous(sde, num_steps, eps, time_grid):
    return grid.continuous_grid(sde, grid.evaluation_times(time_grid, num_steps, sde, eps))


def _build_sde_step(step):
    def build(sde, score_fn, num_steps, eps, o):
        coeffs = _continuous(sde, num_steps, eps, o["time_grid"])
        return functools.partial(step, sde=sde, score_fn=score_fn), coeffs
    return build


def _discretized(sde, num_steps):
    sde_k = sde.with_num_steps(num_steps)
    if sde_k.has_chain and not float(jnp.max(sde_k.discrete_betas)) < 1.0:
        raise ValueError(f"num_steps={num_steps} is too few for reverse_diffusion on this SDE: "
                         f"its {num_steps}-step DDPM chain has a beta >= 1")
    return sde_k, grid.discretization_grid(sde_k, num_steps)


def _build_reverse_diffusion(sde, score_fn, num_steps, eps, o):
    sde_k, coeffs = _discretized(sde, num_steps)
    return functools.partial(steps.reverse_diffusion, sde=sde_k, score_fn=score_fn), coeffs


def _chain_or_continuous(sde, num_steps, eps, o):
    use_chain = sde.has_chain if o["chain"] is None else o["chain"]
    if use_chain and not sde.has_chain:
        raise ValueError(f"chain=True needs an SDE with a DDPM chain (VPSDE, CosineVPSDE, "
                         f"DiscreteVPSDE), got "
                         f"{type(sde).__name__}")
    if use_chain:
        times = grid.evaluation_times(o["time_grid"], num_steps, sde, sde.T / sde.N)
        return grid.chain_grid(sde, times)
    return _continuous(sde, num_steps, eps, o["time_grid"])


def _build_ancestral(sde, score_fn, num_steps, eps, o):
    coeffs = _chain_or_continuous(sde, num_steps, eps, o)
    noise = (lambda v, b2: v) if o["variance"] == "beta_tilde" else (lambda v, b2: b2)
    step = functools.partial(steps.generalized_ddim, score_fn=score_fn, eps_scale="posterior",
                             noise_scale=noise, clip=o["clip_denoised"])
    return step, coeffs


def _build_ddim(sde, score_fn, num_steps, eps, o):
    coeffs = _chain_or_continuous(sde, num_steps, eps, o)
    eta2 = o["eta"] ** 2
    step = functools.partial(steps.generalized_ddim, score_fn=score_fn, eps_scale="marginal",
                             noise_scale=(lambda v, b2: eta2 * v) if eta2 else None,
                             clip=o["clip_denoised"])
    return step, coeffs


def _build_pc(sde, score_fn, num_steps, eps, o):
    predictor = o["predictor"]
    if predictor == "reverse_diffusion":
        if o["time_grid"] != "uniform":
            raise ValueError("time_grid must be 'uniform' for pc with the reverse_diffusion "
                             "predictor (it runs on the SDE's own discretization grid)")
        sde_k, coeffs = _discretized(sde, num_steps)
        predict = functools.partial(steps.reverse_diffusion, sde=sde_k, score_fn=score_fn)
    else:
        coeffs = _continuous(sde, num_steps, eps, o["time_grid"])
        predict = (None if predictor == "none" else
                   functools.partial(steps.euler_maruyama, sde=sde, score_fn=score_fn))
    correct = functools.partial(steps.langevin_corrector, score_fn=score_fn, snr=o["snr"],
                                num_steps=o["corrector_steps"])
    step = functools.partial(steps.predictor_corrector, corrector=correct, predictor=predict)
    return step, coeffs


def _build_multistep(step_fn, init):
    def build(sde, score_fn, num_steps, eps, o):
        coeffs = _continuous(sde, num_steps, eps, o["time_grid"])
        kwargs = {"order": o["order"]} if "order" in o else {}
        step = functools.partial(step_fn, score_fn=score_fn, num_steps=num_steps, **kwargs)
        return steps.Multistep(init, step), coeffs
    return build


def _ratio(alpha, sigma):
    return np.asarray(sigma, np.float64) / np.asarray(alpha, np.float64)


def _build_dpm_solver_2s(sde, score_fn, num_steps, eps, o):
    coeffs = _continuous(sde, num_steps, eps, o["time_grid"])
    r = _ratio(coeffs.alpha, coeffs.sigma)
    r_next = _ratio(coeffs.alpha_next, coeffs.sigma_next)
    t = np.asarray(coeffs.t, np.float64)
    last = r_next == 0  # the last step, to sigma = 0, is first order
    t_mid = np.where(last, t, grid.times_for_ratio(sde, np.sqrt(r * np.where(last, r, r_next)),
                                                   eps))
    alpha_mid, sigma_mid = sde.marginal_coeffs(jnp.asarray(t_mid, coeffs.t.dtype))
    step = functools.partial(steps.dpm_solver_2s, score_fn=score_fn)
    return step, coeffs._replace(t_mid=jnp.asarray(t_mid, coeffs.t.dtype), alpha_mid=alpha_mid,
                                 sigma_mid=sigma_mid)


def _build_edm(sde, score_fn, num_steps, eps, o):
    coeffs = _continuous(sde, num_steps, eps, o["time_grid"])
    if "s_churn" not in o:
        return functools.partial(steps.edm_heun, score_fn=score_fn), coeffs
    r = _ratio(coeffs.alpha, coeffs.sigma)
    inside = (r >= o["s_tmin"]) & (r <= o["s_tmax"])
    gamma = np.where(inside, min(o["s_churn"] / num_steps, math.sqrt(2.0) - 1.0), 0.0)
    t = np.asarray(coeffs.t, np.float64)
    t_hat = np.where(gamma > 0, grid.times_for_ratio(sde, (1.0 + gamma) * r, eps,
                                                     t_max=4.0 * sde.T), t)
    alpha_hat, sigma_hat = sde.marginal_coeffs(jnp.asarray(t_hat, coeffs.t.dtype))
    if not np.allclose(_ratio(alpha_hat, sigma_hat), (1.0 + gamma) * r, rtol=1e-4):
        raise ValueError("s_churn raises the noise level beyond what this SDE reaches by "
                         "t = 4 T; lower s_churn or s_tmax")
    step = functools.partial(steps.edm_stochastic, score_fn=score_fn, s_noise=o["s_noise"])
    return step, coeffs._replace(t_hat=jnp.asarray(t_hat, coeffs.t.dtype), alpha_hat=alpha_hat,
                                 sigma_hat=sigma_hat)


def _check_order(name, value):
    if value not in (1, 2, 3) or isinstance(value, bool):
        raise ValueError(f"{name} must be 1, 2 or 3, got {value!r}")
    return int(value)


def _heun_nfe(num_steps, o):
    return 2 * num_steps - 1  # the last step, to t = 0, is an Euler step


def _pc_nfe(num_steps, o):
    return num_steps * (o["corrector_steps"] + (o["predictor"] != "none"))


_GRID = ("uniform", _check_grid)
_LOGSNR = ("logsnr", _check_grid)
_KARRAS = ("karras", _check_grid)
_CHAIN = (None, _check_chain)
_CLIP = (None, _check_clip)
SAMPLERS: dict[str, Sampler] = {sampler.name: sampler for sampler in (
    Sampler("ddpm_ancestral", {
        "variance": ("beta_tilde", functools.partial(_check_choice, choices=VARIANCES)),
        "chain": _CHAIN, "time_grid": _GRID, "clip_denoised": _CLIP}, _build_ancestral),
    Sampler("euler_maruyama", {"time_grid": _GRID}, _build_sde_step(steps.euler_maruyama)),
    Sampler("reverse_diffusion", {}, _build_reverse_diffusion),
    Sampler("pf_ode_euler", {"time_grid": _GRID}, _build_sde_step(steps.pf_ode_euler),
            deterministic=lambda o: True),
    Sampler("pf_ode_heun", {"time_grid": _GRID}, _build_sde_step(steps.pf_ode_heun),
            nfe=_heun_nfe, deterministic=lambda o: True),
    Sampler("pf_ode_adaptive", {
        "rtol": (1e-5, _check_pos), "atol": (1e-5, _check_pos),
        "solver": ("tsit5", functools.partial(_check_choice, choices=ADAPTIVE_ODE_SOLVERS)),
        "max_steps": (4096, check_num_steps)}, solve=lambda x_T, sde, score_fn, eps, o:
        _adaptive(x_T, sde, score_fn, eps, **o)),
    Sampler("ddim", {"eta": (0.0, _check_nonneg), "chain": _CHAIN, "time_grid": _GRID,
                     "clip_denoised": _CLIP}, _build_ddim,
            deterministic=lambda o: o["eta"] == 0),
    Sampler("pc", {
        "snr": (0.16, _check_pos), "corrector_steps": (1, check_num_steps),
        "predictor": ("reverse_diffusion", functools.partial(_check_choice, choices=PREDICTORS)),
        "time_grid": _GRID}, _build_pc, nfe=_pc_nfe, affine=False),
    Sampler("dpm_solver_pp", {"order": (2, _check_order), "time_grid": _LOGSNR},
            _build_multistep(steps.dpm_solver_pp, steps.dpm_solver_pp_init), affine=False,
            deterministic=lambda o: True),
    Sampler("dpm_solver_2s", {"time_grid": _LOGSNR}, _build_dpm_solver_2s, nfe=_heun_nfe,
            deterministic=lambda o: True),
    Sampler("unipc", {"time_grid": _LOGSNR}, _build_multistep(steps.unipc, steps.unipc_init),
            affine=False, deterministic=lambda o: True),
    Sampler("edm_heun", {"time_grid": _KARRAS}, _build_edm, nfe=_heun_nfe,
            deterministic=lambda o: True),
    Sampler("edm_stochastic", {
        "s_churn": (10.0, _check_nonneg), "s_tmin": (0.05, _check_nonneg),
        "s_tmax": (50.0, _check_nonneg), "s_noise": (1.0, _check_pos), "time_grid": _KARRAS},
        _build_edm, nfe=_heun_nfe, affine=False,
        deterministic=lambda o: o["s_churn"] == 0),
)}


def get_sampler(method: str) -> Sampler:
    """The registered ``Sampler`` called ``method``; ValueError listing the valid names."""
    _check_choice("method", method, tuple(SAMPLERS))
    return SAMPLERS[method]


def _check_shape(shape) -> tuple[int, ...]:
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


def sample(rng: jax.Array, sde, score_fn: ScoreFn, shape: Sequence[int],
           method: str = "euler_maruyama", num_steps: int = 1000, eps: float = 1e-3,
           **options) -> tuple[jax.Array, jax.Array | int]:
    r"""Draws samples of the model ``score_fn`` by running its reverse process from the prior.

    Methods (options in brackets, defaults first):

    * ``euler_maruyama`` [time_grid]: the reverse SDE (Anderson 1982; Song et al. 2021, Eq. 6).
    * ``reverse_diffusion``: Song et al. 2021, Eq. 46, on the SDE's ``num_steps``-step
      discretization ``sde.with_num_steps(num_steps)`` and its grid ``t_i = (i + 1) T / K``.
    * ``ddpm_ancestral`` [variance="beta_tilde" | "beta", chain, time_grid, clip_denoised=False]:
      Ho et al. 2020, Algorithm 2, on a strided sub-sequence of the times of the SDE's DDPM chain
      (VP, cosine VP, ``DiscreteVPSDE``) or, without a chain or with ``chain=False``, on the time
      grid (SMLD's ancestral sampler for VE). ``beta_tilde`` is diffusers' default
      ("fixed_small"), ``beta`` score_sde's ("fixed_large").
    * ``ddim`` [eta=0.0, chain, time_grid, clip_denoised=False]: Song, Meng & Ermon 2021,
      Eq. 12; ``eta = 1`` is ancestral sampling with ``beta_tilde``.
    * ``pf_ode_euler``, ``pf_ode_heun`` [time_grid]: the probability-flow ODE (Eq. 13) with
      Euler (order 1) or Heun (order 2) steps.
    * ``pf_ode_adaptive`` [rtol=1e-5, atol=1e-5, solver="tsit5" | "dopri5" | "bosh3" | "heun",
      max_steps=4096]: an adaptive diffrax solve from ``T`` to ``eps``, then one Euler step to 0;
      ``num_steps`` is not used.
    * ``pc`` [snr=0.16, corrector_steps=1, predictor="reverse_diffusion" | "euler_maruyama" |
      "none", time_grid]: predictor-corrector with the Langevin corrector (Song et al. 2021,
      Algorithms 1 and 5).

    Every coefficient a step reads comes from ``sde.marginal_coeffs`` at its grid times, the same
    ``(alpha_t, sigma_t)`` that ``models.get_score_fn`` used to turn the network output into
    ``score_fn``, so an eps network's output reaches ``ddpm_ancestral`` and ``ddim`` unchanged.
    ``clip_denoised`` clips the denoised estimate ``x0_hat`` to ``[-1, 1]`` (``True``) or a range
    ``(lo, hi)`` before the step, as diffusers' ``clip_sample``.

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
      **options: the method's options above.

    Returns:
      ``x`` ``(B, *D)`` and ``nfe``, the number of calls of ``score_fn`` (an int, a scalar array
      for ``pf_ode_adaptive``).

    Raises:
      ValueError: an unknown method (the valid ones are listed) or option, ``num_steps < 1``,
        ``eps`` outside ``(0, T)``, a bad shape or option value; before anything is traced.
    """
    shape = _check_shape(shape)
    sampler = get_sampler(method)
    _check_common(sde, num_steps, eps)
    opts = sampler.check_options(options)
    score_fn = shape_checked(score_fn)
    if not sampler.adaptive:
        step, coeffs = _build(sampler, sde, score_fn, num_steps, eps, opts)
    rng_prior, rng_steps = jax.random.split(rng)
    x_T = sde.prior_sampling(rng_prior, shape)
    if sampler.adaptive:
        return sampler.solve(x_T, sde, score_fn, float(eps), opts)
    return scan_steps(step, rng_steps, x_T, coeffs), sampler.nfe(num_steps, opts)


def _first_entries(x, t):
    """Each example's first entry of ``x`` (a scalar for a scalar ``t``), without gradient."""
    x = lax.stop_gradient(x)
    if jnp.ndim(t) == 1 and jnp.shape(t)[0] == jnp.shape(x)[0]:
        first = jnp.reshape(x, (jnp.shape(x)[0], -1))[:, 0]
    else:
        first = jnp.ravel(x)[0]
    return first.astype(jnp.result_type(t))


def shape_checked(score_fn: ScoreFn) -> ScoreFn:
    """``score_fn`` that raises ValueError, when traced, if its output is not shaped like its
    input ``x`` (a ``(1, D)`` output would otherwise broadcast over the batch silently), and
    whose evaluations run one after another.

    Sequencing: ``t`` is made to depend on ``x`` (``t + 0 x_0``, ``x_0`` each example's first
    entry: XLA does not fold a float product with 0), so what the score computes from ``t``
    alone waits for its ``x``. Without it a step's two evaluations at the same time (the pc
    sampler's corrector and predictor) share no input but ``t``, and XLA:CPU may run their
    ``t``-only parts at once:
    two batched LAPACK calls (a mixture score's ``solve`` / ``slogdet`` of ``(B, K, D, D)``
    covariances) then each block an intra-op thread waiting for batch tasks queued behind the
    other (jaxlib's ``ParallelBatchMap``), a deadlock once every thread of the pool waits (on 2
    cores from B = 1,800 with 5 x 5 covariances; ``tests/test_sampling.py`` keeps the
    reproduction). A network's ``t``-only work (its time embedding) is too small for the
    ordering to cost anything. (``lax.optimization_barrier`` on ``(x, t)`` orders them too but
    crashed XLA:CPU, a segmentation fault, sampling a (250000, 8) batch.) A NaN or infinite
    first entry of an example makes that example's ``t`` NaN, where it is lost anyway.
    """
    def checked(x, t):
        t = t + 0.0 * _first_entries(x, t)
        out = score_fn(x, t)
        if jnp.shape(out) != jnp.shape(x):
            raise ValueError(f"score_fn must return an array shaped like x {jnp.shape(x)}, got "
                             f"shape {jnp.shape(out)}")
        return out
    return checked


def _check_common(sde, num_steps, eps):
    check_num_steps("num_steps", num_steps)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < sde.T:
        raise ValueError(f"eps must be a real number in (0, T={sde.T}), got {eps!r}")


def _build(sampler, sde, score_fn, num_steps, eps, opts):
    with jax.ensure_compile_time_eval():  # the grid is a constant, also under a caller's jit
        return sampler.build(sde, score_fn, num_steps, float(eps), opts)


def build_sampler(sde, score_fn: ScoreFn, method: str, num_steps: int, eps: float = 1e-3,
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
    _check_common(sde, num_steps, eps)
    if sampler.adaptive:
        raise ValueError(f"build_sampler takes a fixed-step method; {method!r} is adaptive "
                         f"(its steps are chosen by a step-size controller)")
    opts = sampler.check_options(options)
    step, coeffs = _build(sampler, sde, shape_checked(score_fn), num_steps, eps, opts)
    return step, coeffs, sampler.nfe(num_steps, opts)


def scan_steps(step, rng: jax.Array, x: jax.Array, coeffs: grid.GridCoeffs) -> jax.Array:
    """The driver: ``lax.scan`` of ``step(key_k, x, c_k)`` over the grid; the last step's mean.
    A ``steps.Multistep`` carries its state (``init(x)``) instead of ``x``."""
    coeffs = jax.tree.map(lambda a: a.astype(x.dtype), coeffs)
    keys = jax.random.split(rng, coeffs.t.shape[0])
    state, fn = (step.init(x), step.step) if isinstance(step, steps.Multistep) else (x, step)

    def body(carry, inputs):
        key, c = inputs
        return fn(key, carry[0], c), None

    (_, x_mean), _ = lax.scan(body, (state, x), (keys, coeffs))
    return x_mean


def _adaptive(x_T, sde, score_fn, eps, *, rtol, atol, solver, max_steps):
    """Probability-flow ODE from ``T`` to ``eps`` with diffrax (PID step-size control), then an
    Euler step to 0. NFE: the solver's new stages per step times its steps (accepted and
    rejected), plus the first step's first stage and the final Euler step."""
    flow = sde.reverse(score_fn, probability_flow=True)
    B = x_T.shape[0]

    def vector_field(t, x, args):
        return flow.sde(x, jnp.full((B,), t, x.dtype))[0].astype(x.dtype)

    solver_cls, stages, first_stage = ODE_SOLVERS[solver]
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver_cls(), t0=jnp.asarray(sde.T, x_T.dtype),
        t1=jnp.asarray(eps, x_T.dtype), dt0=-0.01 * (sde.T - eps), y0=x_T,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps)
    x_eps = sol.ys[-1]
    last = grid.GridCoeffs(t=jnp.asarray(eps, x_T.dtype), t_next=jnp.zeros((), x_T.dtype))
    x0, _ = steps.pf_ode_euler(None, x_eps, last, sde=sde, score_fn=score_fn)
    return x0, stages * sol.stats["num_steps"] + first_stage + 1
