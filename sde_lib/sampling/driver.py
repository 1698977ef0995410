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

from sde_lib._arrays import as_pytree_fn, pad_with_last
from sde_lib._validation import check_choice, check_nonneg, check_num_steps, check_positive
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
        return check_choice(name, value, grid.TIME_GRIDS)
    return tuple(float(v) for v in value)  # checked against num_steps in evaluation_times


def _one_per_step(num_steps: int, options: dict) -> int:
    return num_steps


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
        function that ``scan_steps`` runs over the grid (a ``steps.Multistep`` for the multistep
        methods).
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


def _continuous(sde, num_steps, eps, time_grid):
    return grid.continuous_grid(sde, grid.evaluation_times(time_grid, num_steps, sde, eps))


def _continuous_grid(sde, num_steps, eps, o):
    return _continuous(sde, num_steps, eps, o["time_grid"])


def _sde_step(step):
    return lambda sde, score_fn, o: functools.partial(step, sde=sde, score_fn=score_fn)


def _discretization(sde, num_steps):
    """``sde.with_num_steps(K)``, refused where its DDPM chain has a beta >= 1."""
    sde_k = sde.with_num_steps(num_steps)
    if sde_k.has_chain and not float(jnp.max(sde_k.discrete_betas)) < 1.0:
        raise ValueError(f"num_steps={num_steps} is too few for reverse_diffusion on this SDE: "
                         f"its {num_steps}-step DDPM chain has a beta >= 1")
    return sde_k


def _discretization_grid(sde_k, num_steps, eps, o):
    return grid.discretization_grid(sde_k, num_steps)


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


def _ancestral_step(sde, score_fn, o):
    noise = (lambda v, b2: v) if o["variance"] == "beta_tilde" else (lambda v, b2: b2)
    return functools.partial(steps.generalized_ddim, score_fn=score_fn, eps_scale="posterior",
                             noise_scale=noise, clip=o["clip_denoised"])


def _ddim_step(sde, score_fn, o):
    eta2 = o["eta"] ** 2
    return functools.partial(steps.generalized_ddim, score_fn=score_fn, eps_scale="marginal",
                             noise_scale=(lambda v, b2: eta2 * v) if eta2 else None,
                             clip=o["clip_denoised"])


def _pc_grid(sde, num_steps, eps, o):
    if o["predictor"] != "reverse_diffusion":
        return _continuous_grid(sde, num_steps, eps, o)
    return grid.discretization_grid(sde, num_steps)  # time_grid checked by Sampler.build


def _pc_step(sde, score_fn, o):
    predictor = o["predictor"]
    predict = (None if predictor == "none" else functools.partial(
        steps.reverse_diffusion if predictor == "reverse_diffusion" else steps.euler_maruyama,
        sde=sde, score_fn=score_fn))
    correct = functools.partial(steps.langevin_corrector, score_fn=score_fn, snr=o["snr"],
                                num_steps=o["corrector_steps"])
    return functools.partial(steps.predictor_corrector, corrector=correct, predictor=predict)


def _multistep_grid(max_order):
    """The continuous grid with each step's order ``min(order, k + 1, K - k)``."""
    def build(sde, num_steps, eps, o):
        coeffs = _continuous_grid(sde, num_steps, eps, o)
        k = np.arange(num_steps)
        order = np.minimum(np.minimum(o.get("order", max_order), k + 1), num_steps - k)
        return coeffs._replace(order=jnp.asarray(order, coeffs.t.dtype))
    return build


def _multistep_step(step_fn, init):
    return lambda sde, score_fn, o: steps.Multistep(init, functools.partial(step_fn,
                                                                            score_fn=score_fn))


def _ratio(alpha, sigma):
    return np.asarray(sigma, np.float64) / np.asarray(alpha, np.float64)


def _dpm_solver_2s_grid(sde, num_steps, eps, o):
    coeffs = _continuous_grid(sde, num_steps, eps, o)
    r = _ratio(coeffs.alpha, coeffs.sigma)
    r_next = _ratio(coeffs.alpha_next, coeffs.sigma_next)
    t = np.asarray(coeffs.t, np.float64)
    last = r_next == 0  # the last step, to sigma = 0, is first order
    t_mid = np.where(last, t, grid.times_for_ratio(sde, np.sqrt(r * np.where(last, r, r_next)),
                                                   eps))
    alpha_mid, sigma_mid = sde.marginal_coeffs(jnp.asarray(t_mid, coeffs.t.dtype))
    return coeffs._replace(t_mid=jnp.asarray(t_mid, coeffs.t.dtype), alpha_mid=alpha_mid,
                           sigma_mid=sigma_mid)


def _edm_grid(sde, num_steps, eps, o):
    coeffs = _continuous_grid(sde, num_steps, eps, o)
    if "s_churn" not in o:
        return coeffs
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
    return coeffs._replace(t_hat=jnp.asarray(t_hat, coeffs.t.dtype), alpha_hat=alpha_hat,
                           sigma_hat=sigma_hat)


def _edm_step(sde, score_fn, o):
    if "s_churn" not in o:
        return functools.partial(steps.edm_heun, score_fn=score_fn)
    return functools.partial(steps.edm_stochastic, score_fn=score_fn, s_noise=o["s_noise"])


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
        "variance": ("beta_tilde", functools.partial(check_choice, choices=VARIANCES)),
        "chain": _CHAIN, "time_grid": _GRID, "clip_denoised": _CLIP},
        _chain_or_continuous, _ancestral_step),
    Sampler("euler_maruyama", {"time_grid": _GRID}, _continuous_grid,
            _sde_step(steps.euler_maruyama)),
    Sampler("reverse_diffusion", {}, _discretization_grid, _sde_step(steps.reverse_diffusion),
            discretized=lambda o: True),
    Sampler("pf_ode_euler", {"time_grid": _GRID}, _continuous_grid,
            _sde_step(steps.pf_ode_euler), deterministic=lambda o: True),
    Sampler("pf_ode_heun", {"time_grid": _GRID}, _continuous_grid, _sde_step(steps.pf_ode_heun),
            nfe=_heun_nfe, deterministic=lambda o: True),
    Sampler("pf_ode_adaptive", {
        "rtol": (1e-5, check_positive), "atol": (1e-5, check_positive),
        "solver": ("tsit5", functools.partial(check_choice, choices=ADAPTIVE_ODE_SOLVERS)),
        "max_steps": (4096, check_num_steps)}, solve=lambda x_T, sde, score_fn, eps, o:
        _adaptive(x_T, sde, score_fn, eps, **o)),
    Sampler("ddim", {"eta": (0.0, check_nonneg), "chain": _CHAIN, "time_grid": _GRID,
                     "clip_denoised": _CLIP}, _chain_or_continuous, _ddim_step,
            deterministic=lambda o: o["eta"] == 0),
    Sampler("pc", {
        "snr": (0.16, check_positive), "corrector_steps": (1, check_num_steps),
        "predictor": ("reverse_diffusion", functools.partial(check_choice, choices=PREDICTORS)),
        "time_grid": _GRID}, _pc_grid, _pc_step, nfe=_pc_nfe, affine=False,
        discretized=lambda o: o["predictor"] == "reverse_diffusion"),
    Sampler("dpm_solver_pp", {"order": (2, _check_order), "time_grid": _LOGSNR},
            _multistep_grid(3), _multistep_step(steps.dpm_solver_pp, steps.dpm_solver_pp_init),
            affine=False, deterministic=lambda o: True),
    Sampler("dpm_solver_2s", {"time_grid": _LOGSNR}, _dpm_solver_2s_grid,
            lambda sde, score_fn, o: functools.partial(steps.dpm_solver_2s, score_fn=score_fn),
            nfe=_heun_nfe, deterministic=lambda o: True),
    Sampler("unipc", {"time_grid": _LOGSNR}, _multistep_grid(2),
            _multistep_step(steps.unipc, steps.unipc_init), affine=False,
            deterministic=lambda o: True),
    Sampler("edm_heun", {"time_grid": _KARRAS}, _edm_grid, _edm_step, nfe=_heun_nfe,
            deterministic=lambda o: True),
    Sampler("edm_stochastic", {
        "s_churn": (10.0, check_nonneg), "s_tmin": (0.05, check_nonneg),
        "s_tmax": (50.0, check_nonneg), "s_noise": (1.0, check_positive), "time_grid": _KARRAS},
        _edm_grid, _edm_step, nfe=_heun_nfe, affine=False,
        deterministic=lambda o: o["s_churn"] == 0),
)}


def get_sampler(method: str) -> Sampler:
    """The registered ``Sampler`` called ``method``; ValueError listing the valid names."""
    check_choice("method", method, tuple(SAMPLERS))
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
        step, coeffs = sampler.build(sde, score_fn, num_steps, eps, opts)
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
    step, coeffs = sampler.build(sde, shape_checked(score_fn), num_steps, eps, opts)
    return step, coeffs, sampler.nfe(num_steps, opts)


def _loop_inputs(step, rng, x, coeffs):
    """The grid in ``x``'s dtype, one key per grid entry, the initial carry and the step
    function (a ``steps.Multistep`` carries its state, ``init(x)``, instead of ``x``)."""
    coeffs = jax.tree.map(lambda a: jnp.asarray(a).astype(x.dtype), coeffs)
    keys = jax.random.split(rng, coeffs.t.shape[0])
    state, fn = (step.init(x), step.step) if isinstance(step, steps.Multistep) else (x, step)
    return coeffs, keys, state, fn


def scan_steps(step, rng: jax.Array, x: jax.Array, coeffs: grid.GridCoeffs) -> jax.Array:
    """The driver: ``lax.scan`` of ``step(key_k, x, c_k)`` over the grid; the last step's mean.
    A ``steps.Multistep`` carries its state (``init(x)``) instead of ``x``."""
    coeffs, keys, state, fn = _loop_inputs(step, rng, x, coeffs)

    def body(carry, inputs):
        key, c = inputs
        return fn(key, carry[0], c), None

    (_, x_mean), _ = lax.scan(body, (state, x), (keys, coeffs))
    return x_mean


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
      ValueError: as ``sample``; an adaptive or discretized method (named).
    """

    def __init__(self, sde, shape: Sequence[int], method: str = "euler_maruyama",
                 max_num_steps: int = 1000, eps: float = 1e-3, **options):
        self.shape = _check_shape(shape)
        self.sampler = get_sampler(method)
        check_num_steps("max_num_steps", max_num_steps)
        _check_common(sde, max_num_steps, eps)
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
            options = {**options, "time_grid": _check_grid("time_grid", time_grid)}
        _, coeffs = self.sampler.coefficients(self.sde, num_steps, self.eps, options)
        return jax.tree.map(lambda a: pad_with_last(a, self.max_num_steps), coeffs)

    def __call__(self, rng: jax.Array, score_fn: ScoreFn, num_steps: int,
                 time_grid=None) -> tuple[jax.Array, int]:
        """``(x, nfe)`` of ``num_steps`` steps (on ``time_grid`` if given), as ``sample``."""
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
