r"""One step of each fixed-step sampler: ``step(key, x, c) -> (x_next, x_mean)``.

``x`` is ``(B, *D)`` at time ``c.t``; the step goes to ``c.t_next`` and returns the new state and
its noiseless mean (the driver returns the mean of the last step). ``c`` is a typed record of
scalars, ``grid.GridCoeffs`` (``t, t_next, alpha, alpha_next, sigma, sigma_next``). The SDE, the
score and the options are bound with ``functools.partial`` by the driver, which also counts each
method's score evaluations (Heun's last step, to ``t = 0``, is an Euler step). A stochastic
step draws its noise as ``jax.random.normal(key, x.shape)`` from the ``key`` it is given (the
exact Gaussian laws of ``sde_lib.evaluation`` rely on it); in place of a key it also takes that
draw itself, a float array of ``x``'s shape (the increments of one Brownian path shared by
several runs, ``sde_lib.evaluation.coupled_error``).

Notation: ``s = score_fn(x, t)``, the step size ``h = t - t_next > 0``, the reverse drift
``f(x, t) - g(t)^2 s`` (Song et al. 2021, Eq. 6) and the probability-flow drift
``f(x, t) - g(t)^2 s / 2`` (Eq. 13). Forward in time ``x_{t_next} = x_t - drift h``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sde_lib._arrays import batch_coeff, sum_except_batch


def _times(x, t):
    return jnp.full((x.shape[0],), t, x.dtype)


def _normal(key, x):
    """The step's standard normal draw: from ``key``, or ``key`` itself when it is a float array
    (a given draw)."""
    if jnp.issubdtype(key.dtype, jnp.floating):
        return key.astype(x.dtype)
    return jax.random.normal(key, x.shape, x.dtype)


def euler_maruyama(key, x, c, *, sde, score_fn):
    r"""Euler-Maruyama on the reverse SDE: ``x_mean = x - (f - g^2 s) h``, ``x = x_mean + g
    \sqrt{h} z`` (Song et al. 2021, Eq. 6; Kloeden & Platen 1992, weak order 1)."""
    h = c.t - c.t_next
    drift, g = sde.reverse(score_fn).sde(x, _times(x, c.t))
    x_mean = x - drift * h
    return x_mean + batch_coeff(g, x) * jnp.sqrt(h) * _normal(key, x), x_mean


def reverse_diffusion(key, x, c, *, sde, score_fn):
    r"""Reverse of the forward discretization ``x_{i+1} = x_i + f + G z`` of ``sde`` (the SDE with
    ``K`` steps): ``x_mean = x - f + G^2 s``, ``x = x_mean + G z`` (Song et al. 2021, Eq. 46)."""
    rev_f, rev_G = sde.reverse(score_fn).discretize(x, _times(x, c.t))
    x_mean = x - rev_f
    return x_mean + batch_coeff(rev_G, x) * _normal(key, x), x_mean


def generalized_ddim(key, x, c, *, score_fn, eps_scale, noise_scale, clip=None):
    r"""``x_s = alpha_s \hat x_0 + c_eps \hat\epsilon + c_z z`` from ``t`` to ``s = t_next``.

    ``\hat\epsilon = -sigma_t s(x, t)`` and ``\hat x_0 = (x - sigma_t \hat\epsilon) / alpha_t``
    (Tweedie), with ``alpha_t, sigma_t`` the coefficients ``score_fn`` was built with, so an eps
    network's output is ``\hat\epsilon`` itself. With the transition ``x_t | x_s ~ N(a x_s, b^2)``,
    ``a = alpha_t / alpha_s``, ``b^2 = sigma_t^2 - a^2 sigma_s^2``, the posterior
    ``q(x_s | x_t, x_0)`` has variance ``v = b^2 sigma_s^2 / sigma_t^2`` and mean
    ``alpha_s x_0 + a sigma_s^2 / sigma_t \epsilon``. ``noise_scale(v, b2) -> c_z^2`` picks the
    noise and ``eps_scale`` whether ``c_eps`` keeps the marginal variance
    (``sqrt(sigma_s^2 - c_z^2)``, DDIM, Song, Meng & Ermon 2021, Eq. 12) or is the posterior
    mean's (ancestral sampling, Ho et al. 2020, Algorithm 2 and Eq. 11).

    ``clip = (lo, hi)`` clips ``\hat x_0`` first (diffusers' ``clip_sample``): the ancestral step
    then takes the posterior mean at the clipped ``\hat x_0`` and ``x_t`` (its ``\hat\epsilon`` is
    recomputed from them, as diffusers' DDPMScheduler), DDIM keeps the network's
    ``\hat\epsilon`` (diffusers' DDIMScheduler, ``use_clipped_model_output=False``).
    """
    alpha_t, sigma_t, alpha_s, sigma_s = c.alpha, c.sigma, c.alpha_next, c.sigma_next
    eps_hat = -sigma_t * score_fn(x, _times(x, c.t))
    x0_hat = (x - sigma_t * eps_hat) / alpha_t
    if clip is not None:
        x0_hat = jnp.clip(x0_hat, clip[0], clip[1])
        if eps_scale == "posterior":
            eps_hat = (x - alpha_t * x0_hat) / sigma_t
    a = alpha_t / alpha_s
    b2 = sigma_t**2 - (a * sigma_s) ** 2
    v = b2 * sigma_s**2 / sigma_t**2
    cz2 = 0.0 if noise_scale is None else noise_scale(v, b2)
    if eps_scale == "posterior":
        c_eps = a * sigma_s**2 / sigma_t
    else:
        c_eps = jnp.sqrt(jnp.maximum(sigma_s**2 - cz2, 0.0))
    x_mean = alpha_s * x0_hat + c_eps * eps_hat
    if noise_scale is None:  # deterministic (DDIM, eta = 0): no draw to multiply by 0
        return x_mean, x_mean
    return x_mean + jnp.sqrt(cz2) * _normal(key, x), x_mean


def pf_ode_euler(key, x, c, *, sde, score_fn):
    """Euler step of the probability-flow ODE (Song et al. 2021, Eq. 13): ``x - drift h``."""
    del key
    h = c.t - c.t_next
    drift, _ = sde.reverse(score_fn, probability_flow=True).sde(x, _times(x, c.t))
    x_next = x - drift * h
    return x_next, x_next


def pf_ode_heun(key, x, c, *, sde, score_fn):
    r"""Heun's method (explicit trapezoidal rule, order 2) on the probability-flow ODE:
    ``\tilde x = x - d(x, t) h``, ``x_next = x - (d(x, t) + d(\tilde x, t_next)) h / 2``
    (Karras et al. 2022, Algorithm 1). The last step, to ``t_next = 0`` where the score is
    singular, is an Euler step."""
    del key
    h = c.t - c.t_next
    flow = sde.reverse(score_fn, probability_flow=True)
    d = flow.sde(x, _times(x, c.t))[0]
    x_euler = x - d * h

    def correct(x_euler):
        d_next = flow.sde(x_euler, _times(x, c.t_next))[0]
        return x - 0.5 * (d + d_next) * h

    x_next = lax.cond(c.t_next > 0, correct, lambda y: y, x_euler)
    return x_next, x_next


def langevin_corrector(key, x, c, *, score_fn, snr, num_steps):
    r"""``num_steps`` Langevin MCMC steps targeting ``p_t`` (Song et al. 2021, Algorithm 5):
    ``x_mean = x + e s``, ``x = x_mean + sqrt(2 e) z`` with step ``e = 2 a (snr ||z|| / ||s||)^2``,
    ``a = (alpha_t / alpha_{t_next})^2``, the squared mean coefficient of the step: ``1 - beta_i``
    between consecutive times of a DDPM chain (``DiscreteVPSDE``; score_sde's ``alphas[i]``),
    ``exp(-(B(t) - B(t_next)))`` on a continuous VP grid, ``1`` for VE. As in score_sde,
    ``||z||`` and ``||s||`` are per-example norms averaged over the batch: a per-example ratio
    explodes where ``s`` vanishes (at the modes), most of all in low dimension.
    """
    a = (c.alpha / c.alpha_next) ** 2
    t = _times(x, c.t)

    def body(carry, key):
        x, _ = carry
        s = score_fn(x, t)
        z = _normal(key, x)
        ratio = (jnp.mean(jnp.sqrt(sum_except_batch(z**2)))
                 / jnp.mean(jnp.sqrt(sum_except_batch(s**2))))
        e = 2.0 * a * (snr * ratio) ** 2
        x_mean = x + e * s
        return (x_mean + jnp.sqrt(2.0 * e) * z, x_mean), None

    (x, x_mean), _ = lax.scan(body, (x, x), jax.random.split(key, num_steps))
    return x, x_mean


def predictor_corrector(key, x, c, *, corrector, predictor):
    """Corrector steps at ``t``, then one predictor step to ``t_next`` (Song et al. 2021,
    Algorithm 1). Without a predictor the corrector's mean is the last step's mean."""
    key_c, key_p = jax.random.split(key)
    x, x_mean = corrector(key_c, x, c)
    if predictor is None:
        return x, x_mean
    return predictor(key_p, x, c)


# ----- exponential integrators in log-SNR, UniPC, EDM ------------------------------------------
#
# Notation: lambda_t = log(alpha_t / sigma_t), h = lambda_{t_next} - lambda_t > 0, and the data
# prediction (Tweedie) D(x, t) = (x + sigma_t^2 s(x, t)) / alpha_t. The exact solution of the
# probability-flow ODE in these variables is x_s = (sigma_s / sigma_t) x_t + sigma_s
# int_{lambda_t}^{lambda_s} e^{lambda} D(x_lambda) d lambda (Lu et al. 2022b, Eq. 9); the
# multistep methods interpolate D through earlier evaluations, carried in the scan's state.
# ``e^{-h} = (sigma_s alpha_t) / (sigma_t alpha_s)`` is computed from the coefficients, so the
# last step, to sigma = 0 (h = infinity), is x_0 = D(x, t) exactly.


class Multistep(NamedTuple):
    """A step that carries a state beyond ``x`` (earlier model outputs): ``init(x_T) -> state``
    with ``state[0] = x``, and ``step(key, state, c) -> (state, x_mean)``; ``scan_steps`` runs
    it like a plain step."""

    init: Callable
    step: Callable


def _denoise(score_fn, x, t, alpha, sigma):
    """Tweedie's data prediction ``D = (x + sigma^2 s(x, t)) / alpha``."""
    return (x + sigma**2 * score_fn(x, _times(x, t))) / alpha


def _lam(alpha, sigma):
    return jnp.log(alpha) - jnp.log(sigma)


def _safe(v):
    """``v`` where it is finite and non-zero, 1 elsewhere (for the branches not selected)."""
    return jnp.where(jnp.isfinite(v) & (v != 0), v, 1.0)


def _exp_step(c, x, m0):
    """The first-order step (DPM-Solver-1 = DDIM, eta = 0): ``(sigma_s / sigma_t) x - alpha_s
    (e^{-h} - 1) m0``, with ``e^{-h} - 1`` and a safe ``h`` for the higher orders."""
    ratio = c.sigma_next / c.sigma
    phi1 = ratio * c.alpha / c.alpha_next - 1.0  # e^{-h} - 1, -1 at sigma_next = 0
    h = _safe(_lam(c.alpha_next, c.sigma_next) - _lam(c.alpha, c.sigma))
    return ratio * x - c.alpha_next * phi1 * m0, phi1, h


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

    Step ``k`` of ``K`` runs at the order its grid gives (``c.order``, ``min(order, k + 1, K -
    k)``): lower orders to warm up, and the last two steps at orders 2 and 1 (the last, to
    ``sigma = 0``, is ``x_0 = m_0``). The step reads ``K`` only through the grid.
    """
    del key
    x, m1, m2, lam1, lam2, k = state
    m0 = _denoise(score_fn, x, c.t, c.alpha, c.sigma)
    x1, phi1, h = _exp_step(c, x, m0)
    lam0 = _lam(c.alpha, c.sigma)
    r0, r1 = _safe((lam0 - lam1) / h), _safe((lam1 - lam2) / h)
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
    m0 = _denoise(score_fn, x, c.t, c.alpha, c.sigma)
    x1, _, _ = _exp_step(c, x, m0)

    def second(x):
        mid = c._replace(t_next=c.t_mid, alpha_next=c.alpha_mid, sigma_next=c.sigma_mid)
        u, _, _ = _exp_step(mid, x, m0)
        m_mid = _denoise(score_fn, u, c.t_mid, c.alpha_mid, c.sigma_mid)
        return _exp_step(c, x, m_mid)[0]

    x_next = lax.cond(c.sigma_next > 0, second, lambda x: x1, x)
    return x_next, x_next


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
    rho0 = (b2 - b1) / _safe(r - 1.0)
    return rho0, b1 - rho0


def unipc(key, state, c, *, score_fn):
    r"""UniPC: the UniP-2 predictor with the UniC corrector, ``B(h) = e^{-h} - 1`` (Zhao et al.
    2023, Algorithms 2-3, data prediction; as diffusers' UniPCMultistepScheduler). Each step
    evaluates ``m_0 = D(x, t)`` once and uses it twice: first UniC corrects ``x`` (the previous
    predictor's output) with ``m_0`` at the previous predictor's order, then UniP predicts
    ``x_s`` from the corrected ``x`` with ``m_0`` and ``m_1``; so NFE = K. Step ``k`` predicts at
    the order of its grid, ``c.order = min(2, k + 1, K - k)`` (the last, to ``sigma = 0``, is
    ``x_0 = m_0``).
    """
    del key
    x, x1_prev, m1, m2, lam1, lam2, sigma1, alpha1, p1, k = state
    m0 = _denoise(score_fn, x, c.t, c.alpha, c.sigma)
    lam0 = _lam(c.alpha, c.sigma)
    # UniC from t_{k-1} to t_k with the new m_0 (skipped at k = 0)
    prev = c._replace(t_next=c.t, alpha_next=c.alpha, sigma_next=c.sigma,
                      alpha=_safe(alpha1), sigma=_safe(sigma1))
    base, b_h, h_c = _exp_step(prev, x1_prev, m1)
    d1_t = m0 - m1
    rk = _safe((lam2 - lam1) / h_c)
    rho0, rho1 = _bh2_rhos(h_c, rk)
    corr1 = base - c.alpha * b_h * 0.5 * d1_t
    corr2 = base - c.alpha * b_h * (rho0 * (m2 - m1) / rk + rho1 * d1_t)
    x = jnp.where(k == 0, x, jnp.where(p1 >= 2, corr2, corr1))
    # UniP from t_k to t_next
    x_pred, phi1, h = _exp_step(c, x, m0)
    rk_p = _safe((lam1 - lam0) / h)
    order = c.order.astype(jnp.int32)
    x_next = jnp.where(order >= 2, x_pred - c.alpha_next * phi1 * 0.5 * (m1 - m0) / rk_p,
                       x_pred)
    state = (x_next, x, m0, m1, lam0, lam1, c.sigma, c.alpha, order, k + 1)
    return state, x_next


def _edm_heun_from(x_hat, c, score_fn, t_hat, alpha_hat, sigma_hat):
    r"""Heun's step of EDM's ODE ``d x~ / d sigma~ = (x~ - D) / sigma~`` in ``x~ = x / alpha``,
    ``sigma~ = sigma / alpha`` (Karras et al. 2022, Algorithm 1 and Eq. 4 with ``s = alpha``),
    from ``sigma~`` at ``t_hat`` to ``c.t_next``; an Euler step to ``sigma = 0``."""
    s_hat = sigma_hat / alpha_hat
    s_next = c.sigma_next / c.alpha_next
    xt = x_hat / alpha_hat
    d = (xt - _denoise(score_fn, x_hat, t_hat, alpha_hat, sigma_hat)) / s_hat
    x_euler = xt + (s_next - s_hat) * d

    def correct(x_euler):
        x_e = c.alpha_next * x_euler
        d_next = (x_euler - _denoise(score_fn, x_e, c.t_next, c.alpha_next, c.sigma_next)) \
            / s_next
        return xt + (s_next - s_hat) * 0.5 * (d + d_next)

    return c.alpha_next * lax.cond(c.sigma_next > 0, correct, lambda y: y, x_euler)


def edm_heun(key, x, c, *, score_fn):
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1): Heun in ``sigma / alpha``
    (its Euler step is DDIM's); the last step, to ``sigma = 0``, is Euler (``x_0 = D``)."""
    del key
    x_next = _edm_heun_from(x, c, score_fn, c.t, c.alpha, c.sigma)
    return x_next, x_next


def edm_stochastic(key, x, c, *, score_fn, s_noise):
    r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): raise the noise level from
    ``sigma~ = sigma / alpha`` to ``sigma^ = (1 + gamma) sigma~`` (``c.t_hat``, where ``gamma =
    min(S_churn / K, sqrt 2 - 1)`` inside ``[S_tmin, S_tmax]``, 0 outside; the driver's grid) by
    ``x~ += sqrt(sigma^2 - sigma~^2) S_noise z`` in ``x~ = x / alpha``, then Heun from
    ``sigma^`` to the next level. With ``S_churn = 0`` it is ``edm_heun``."""
    s, s_hat = c.sigma / c.alpha, c.sigma_hat / c.alpha_hat
    noise = jnp.sqrt(jnp.maximum(s_hat**2 - s**2, 0.0)) * s_noise * _normal(key, x)
    x_hat = c.alpha_hat * (x / c.alpha + noise)
    x_next = _edm_heun_from(x_hat, c, score_fn, c.t_hat, c.alpha_hat, c.sigma_hat)
    return x_next, x_next
