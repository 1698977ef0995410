r"""DPM-Solver++ (Lu et al. 2022b): ``dpm_solver_pp``, the multistep solver of order 1-3, and
``dpm_solver_2s``, the singlestep second-order one; exponential integrators of the
probability-flow ODE in log-SNR (notation in ``multistep.py``). Options: ``time_grid="logsnr"``;
``dpm_solver_pp`` also ``order=2`` (1, 2 or 3), ``lower_order_final=True`` (diffusers' rule: the
last two steps lowered when ``K < 15``; ``False``; ``"always"``) and ``final_sigma="zero"``
(``"sigma_min"``: stop at ``t = T / N``, diffusers' ``final_sigmas_type``) and
``timestep_rounding=False`` (``True``: the network reads its noise prediction at the rounded
chain time of each grid time, as diffusers on a Karras grid; ``multistep.denoise_grid``). With
``time_grid="linspace_multistep"`` (or ``"leading_multistep"``, ``"trailing"``, or ``"karras"``
with ``eps = T / N``) on ``DiscreteVPSDE`` it is ``DPMSolverMultistepScheduler`` step for step
(``docs/porting.md``)."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from sde_lib.sampling import grid
from sde_lib.sampling.multistep import (
    check_final_sigma,
    check_flag,
    check_lower_order_final,
    denoise,
    denoise_grid,
    exp_step,
    log_snr,
    multistep_grid,
    multistep_step,
    noise_to_signal,
    safe,
)
from sde_lib.sampling.registry import (
    Sampler,
    check_grid,
    continuous_coefficients,
    heun_nfe,
    register,
)


def dpm_solver_pp_init(x):
    """State ``(x, m_1, m_2, lambda_1, lambda_2, k)``: the two previous data predictions, their
    log-SNRs and the step index."""
    zero = jnp.zeros((), x.dtype)
    return (x, jnp.zeros_like(x), jnp.zeros_like(x), zero, zero, jnp.zeros((), jnp.int32))


def dpm_solver_pp(key, state, c, *, score_fn):
    r"""DPM-Solver++ multistep (Lu et al. 2022b, Algorithm 2 and its third-order update; the
    data-prediction form of diffusers' DPMSolverMultistepScheduler). With ``m_0 = D(x, t)``, the
    previous predictions ``m_1, m_2`` at log-SNRs ``lambda_1, lambda_2``, ``r_0 = (lambda_t -
    lambda_1) / h``, ``r_1 = (lambda_1 - lambda_2) / h``:

    * order 1: ``x_s = (sigma_s / sigma_t) x - alpha_s (e^{-h} - 1) m_0`` (DDIM);
    * order 2: minus ``alpha_s (e^{-h} - 1) D_1 / 2`` with ``D_1 = (m_0 - m_1) / r_0``;
    * order 3: ``D_1 = D_{1,0} + r_0 / (r_0 + r_1) (D_{1,0} - D_{1,1})``, ``D_2 = (D_{1,0} -
      D_{1,1}) / (r_0 + r_1)``, ``D_{1,0} = (m_0 - m_1) / r_0``, ``D_{1,1} = (m_1 - m_2) / r_1``;
      ``x_s = (sigma_s / sigma_t) x - alpha_s (e^{-h} - 1) m_0 + alpha_s ((e^{-h} - 1) / h + 1)
      D_1 - alpha_s ((e^{-h} - 1 + h) / h^2 - 1 / 2) D_2``.

    Step ``k`` of ``K`` runs at the order its grid gives (``c.order``, ``multistep.step_orders``):
    ``min(order, k + 1)`` to warm up, the last step to ``sigma = 0`` at order 1 (``x_0 = m_0``),
    and with ``lower_order_final=True`` (the default, diffusers' rule) the last two steps at
    orders 1 and at most 2 when ``K < 15``; ``"always"`` lowers them at every ``K``. The default
    is diffusers' so that a port reproduces ``DPMSolverMultistepScheduler`` step for step. The
    two rules differ only for ``order=3`` at ``K >= 15`` (step ``K - 2`` at order 3 or 2), where
    the third-order step is no worse: on Gaussian data (``tests/test_fast_samplers.py``) the
    largest error at K = 16, 32, 64 is 0.0194, 0.00309, 0.000638 against 0.0201, 0.00312,
    0.000640 for ``"always"``, fitted order 2.94 over K = 8-64 with either. Below 15 steps both
    lower the last two steps, where a coarse grid's high-order extrapolation is least reliable.
    The step reads ``K`` only through the grid.
    """
    del key
    x, m1, m2, lam1, lam2, k = state
    m0 = denoise_grid(score_fn, x, c)
    x1, phi1, h = exp_step(c, x, m0)
    lam0 = log_snr(c.alpha, c.sigma)
    r0, r1 = safe((lam0 - lam1) / h), safe((lam1 - lam2) / h)
    d10, d11 = (m0 - m1) / r0, (m1 - m2) / r1
    x2 = x1 - 0.5 * c.alpha_next * phi1 * d10
    d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
    d2 = (d10 - d11) / (r0 + r1)
    x3 = (x1 + c.alpha_next * (phi1 / h + 1.0) * d1
          - c.alpha_next * ((phi1 + h) / h**2 - 0.5) * d2)
    x_next = jnp.where(c.order >= 3, x3, jnp.where(c.order == 2, x2, x1))
    return (x_next, m0, m1, lam0, lam1, k + 1), x_next


def dpm_solver_2s(key, x, c, *, score_fn):
    r"""DPM-Solver++(2S), singlestep second order (Lu et al. 2022b, Algorithm 1, ``r = 1/2``):
    ``u = (sigma_m / sigma_t) x - alpha_m (e^{-h/2} - 1) D(x, t)`` at the log-SNR midpoint
    ``t_m`` (``c.t_mid``), then ``x_s = (sigma_s / sigma_t) x - alpha_s (e^{-h} - 1) D(u, t_m)``.
    Two evaluations per step; the last step, to ``sigma = 0``, is ``x_0 = D(x, t)``."""
    del key
    m0 = denoise(score_fn, x, c.t, c.alpha, c.sigma)
    x1, _, _ = exp_step(c, x, m0)

    def second(x):
        mid = c._replace(t_next=c.t_mid, alpha_next=c.alpha_mid, sigma_next=c.sigma_mid)
        u, _, _ = exp_step(mid, x, m0)
        m_mid = denoise(score_fn, u, c.t_mid, c.alpha_mid, c.sigma_mid)
        return exp_step(c, x, m_mid)[0]

    x_next = lax.cond(c.sigma_next > 0, second, lambda x: x1, x)
    return x_next, x_next


def _dpm_solver_2s_grid(sde, num_steps, eps, o):
    """The continuous grid with each step's log-SNR midpoint ``t_mid`` (the geometric mean of
    the noise-to-signal ratios); the last step, to ``sigma = 0``, has none."""
    coeffs = continuous_coefficients(sde, num_steps, eps, o)
    r = noise_to_signal(coeffs.alpha, coeffs.sigma)
    r_next = noise_to_signal(coeffs.alpha_next, coeffs.sigma_next)
    t = np.asarray(coeffs.t, np.float64)
    last = r_next == 0  # the last step, to sigma = 0, is first order
    t_mid = np.where(last, t, grid.times_for_ratio(sde, np.sqrt(r * np.where(last, r, r_next)),
                                                   eps))
    alpha_mid, sigma_mid = sde.marginal_coeffs(jnp.asarray(t_mid, coeffs.t.dtype))
    return coeffs._replace(t_mid=jnp.asarray(t_mid, coeffs.t.dtype), alpha_mid=alpha_mid,
                           sigma_mid=sigma_mid)


def _check_order(name, value):
    if value not in (1, 2, 3) or isinstance(value, bool):
        raise ValueError(f"{name} must be 1, 2 or 3, got {value!r}")
    return int(value)


register(Sampler("dpm_solver_pp", {"order": (2, _check_order), "time_grid": ("logsnr", check_grid),
                                   "lower_order_final": (True, check_lower_order_final),
                                   "final_sigma": ("zero", check_final_sigma),
                                   "timestep_rounding": (False, check_flag)},
                 multistep_grid(3), multistep_step(dpm_solver_pp, dpm_solver_pp_init),
                 affine=False, deterministic=lambda o: True))
register(Sampler("dpm_solver_2s", {"time_grid": ("logsnr", check_grid)}, _dpm_solver_2s_grid,
                 lambda sde, score_fn, o: functools.partial(dpm_solver_2s, score_fn=score_fn),
                 nfe=heun_nfe, deterministic=lambda o: True))
