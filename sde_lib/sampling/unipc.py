r"""``unipc``: UniPC (Zhao et al. 2023), the UniP-2 predictor with the UniC corrector, a
multistep exponential integrator in log-SNR (notation in ``multistep.py``); options
``time_grid="logsnr"``, ``final_sigma="zero"`` (``"sigma_min"``: stop at ``t = T / N``,
diffusers' ``final_sigmas_type``) and ``timestep_rounding=False`` (``True``: the network reads
its noise prediction at the rounded chain time of each grid time, as diffusers on a Karras
grid; ``multistep.denoise_grid``). Its order rule is diffusers' ``UniPCMultistepScheduler``'s
(``lower_order_final=True`` there lowers the last step at every ``K``). With
``time_grid="linspace_multistep"`` (or ``"leading_multistep"``, ``"trailing"``, or ``"karras"``
with ``eps = T / N``) on ``DiscreteVPSDE`` it is that scheduler (``bh2``, order 2) step for step
(``docs/porting.md``)."""

from __future__ import annotations

import jax.numpy as jnp

from sde_lib.sampling.multistep import (
    check_final_sigma,
    check_flag,
    denoise_grid,
    exp_step,
    log_snr,
    multistep_grid,
    multistep_step,
    safe,
)
from sde_lib.sampling.registry import Sampler, check_grid, register


def unipc_init(x):
    """State ``(x, x_1, m_1, m_2, lambda_1, lambda_2, sigma_1, alpha_1, p_1, k)``: the previous
    sample (before correction), predictions, log-SNRs, coefficients, predictor order, index."""
    zero = jnp.zeros((), x.dtype)
    return (x, jnp.zeros_like(x), jnp.zeros_like(x), jnp.zeros_like(x), zero, zero, zero, zero,
            jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _bh2_rhos(h, r):
    r"""UniPC's ``B(h) = e^{-h} - 1`` ("bh2") coefficients for two points ``(r, 1)``: the
    solution of ``R rho = b``, ``R = [[1, 1], [r, 1]]``, ``b_i = i! phi_{i+1}(-h) / B(h)`` with
    ``phi_1 = (e^{-h} - 1) / (-h) - 1``, ``phi_2 = phi_1 / (-h) - 1/2`` (Zhao et al. 2023,
    Algorithm 3; diffusers' UniPCMultistepScheduler)."""
    hh = -h
    b_h = jnp.expm1(hh)
    phi_1 = b_h / hh - 1.0
    phi_2 = phi_1 / hh - 0.5
    b1, b2 = phi_1 / b_h, 2.0 * phi_2 / b_h
    # rho_0 + rho_1 = b1, r rho_0 + rho_1 = b2
    rho0 = (b2 - b1) / safe(r - 1.0)
    return rho0, b1 - rho0


def unipc(key, state, c, *, score_fn):
    r"""UniPC: the UniP-2 predictor with the UniC corrector, ``B(h) = e^{-h} - 1`` (Zhao et al.
    2023, Algorithms 2-3, data prediction; as diffusers' UniPCMultistepScheduler). Each step
    evaluates ``m_0 = D(x, t)`` once and uses it twice: first UniC corrects ``x`` (the previous
    predictor's output) with ``m_0`` at the previous predictor's order, then UniP predicts
    ``x_s`` from the corrected ``x`` with ``m_0`` and ``m_1``; so NFE = K. Step ``k`` predicts at
    the order of its grid, ``c.order = min(2, k + 1, K - k)`` (the last, to ``sigma = 0``, is
    ``x_0 = m_0``; to ``t = T / N`` with ``final_sigma="sigma_min"``, a first-order step).
    """
    del key
    x, x1_prev, m1, m2, lam1, lam2, sigma1, alpha1, p1, k = state
    m0 = denoise_grid(score_fn, x, c)
    lam0 = log_snr(c.alpha, c.sigma)
    # UniC from t_{k-1} to t_k with the new m_0 (skipped at k = 0)
    prev = c._replace(t_next=c.t, alpha_next=c.alpha, sigma_next=c.sigma,
                      alpha=safe(alpha1), sigma=safe(sigma1))
    base, b_h, h_c = exp_step(prev, x1_prev, m1)
    d1_t = m0 - m1
    rk = safe((lam2 - lam1) / h_c)
    rho0, rho1 = _bh2_rhos(h_c, rk)
    corr1 = base - c.alpha * b_h * 0.5 * d1_t
    corr2 = base - c.alpha * b_h * (rho0 * (m2 - m1) / rk + rho1 * d1_t)
    x = jnp.where(k == 0, x, jnp.where(p1 >= 2, corr2, corr1))
    # UniP from t_k to t_next
    x_pred, phi1, h = exp_step(c, x, m0)
    rk_p = safe((lam1 - lam0) / h)
    order = c.order.astype(jnp.int32)
    x_next = jnp.where(order >= 2, x_pred - c.alpha_next * phi1 * 0.5 * (m1 - m0) / rk_p,
                       x_pred)
    state = (x_next, x, m0, m1, lam0, lam1, c.sigma, c.alpha, order, k + 1)
    return state, x_next


register(Sampler("unipc", {"time_grid": ("logsnr", check_grid),
                           "final_sigma": ("zero", check_final_sigma),
                           "timestep_rounding": (False, check_flag)}, multistep_grid(2),
                 multistep_step(unipc, unipc_init), affine=False, deterministic=lambda o: True))
