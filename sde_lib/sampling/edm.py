r"""EDM's samplers (Karras et al. 2022): ``edm_heun``, Heun's method on the ODE in
``sigma / alpha`` (Algorithm 1), and ``edm_stochastic``, which first raises the noise level by
its churn ``gamma`` (Algorithm 2); for any linear SDE through its noise-to-signal ratio
``sigma_t / alpha_t``. Options (defaults first): ``time_grid="karras"``; ``edm_stochastic`` also
``s_churn=10.0``, ``s_tmin=0.05``, ``s_tmax=50.0`` (the noise-to-signal range where it churns)
and ``s_noise=1.0``."""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from sde_lib._validation import check_nonneg, check_positive
from sde_lib.sampling import grid
from sde_lib.sampling.multistep import denoise, noise_to_signal
from sde_lib.sampling.registry import (
    Sampler,
    check_grid,
    continuous_coefficients,
    heun_nfe,
    register,
    step_noise,
)


def _edm_heun_from(x_hat, c, score_fn, t_hat, alpha_hat, sigma_hat):
    r"""Heun's step of EDM's ODE ``d x~ / d sigma~ = (x~ - D) / sigma~`` in ``x~ = x / alpha``,
    ``sigma~ = sigma / alpha`` (Karras et al. 2022, Algorithm 1 and Eq. 4 with ``s = alpha``),
    from ``sigma~`` at ``t_hat`` to ``c.t_next``; an Euler step to ``sigma = 0``."""
    s_hat = sigma_hat / alpha_hat
    s_next = c.sigma_next / c.alpha_next
    xt = x_hat / alpha_hat
    d = (xt - denoise(score_fn, x_hat, t_hat, alpha_hat, sigma_hat)) / s_hat
    x_euler = xt + (s_next - s_hat) * d

    def correct(x_euler):
        x_e = c.alpha_next * x_euler
        d_next = (x_euler - denoise(score_fn, x_e, c.t_next, c.alpha_next, c.sigma_next)) \
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
    min(S_churn / K, sqrt 2 - 1)`` inside ``[S_tmin, S_tmax]``, 0 outside; ``_edm_grid``) by
    ``x~ += sqrt(sigma^2 - sigma~^2) S_noise z`` in ``x~ = x / alpha``, then Heun from
    ``sigma^`` to the next level. The added standard deviation is exactly 0 where ``sigma^ <=
    sigma~`` (``gamma = 0``: ``S_churn = 0`` or outside ``[S_tmin, S_tmax]``) and ``x`` is then
    kept as it is: under ``jit`` XLA fuses ``sigma^2 - sigma~^2`` into a multiply-add whose
    result is the rounding error of ``sigma~^2`` (``sqrt`` of it: 1.5e-4 ``sigma~`` in
    float32), so without the mask ``S_churn = 0`` would add noise. With ``S_churn = 0`` it is
    ``edm_heun``, bit for bit."""
    s, s_hat = c.sigma / c.alpha, c.sigma_hat / c.alpha_hat
    churn = s_hat > s
    std = jnp.where(churn, jnp.sqrt(jnp.maximum(s_hat**2 - s**2, 0.0)), 0.0)
    x_hat = jnp.where(churn, c.alpha_hat * (x / c.alpha + std * s_noise * step_noise(key, x)),
                      x)
    x_next = _edm_heun_from(x_hat, c, score_fn, c.t_hat, c.alpha_hat, c.sigma_hat)
    return x_next, x_next


def _edm_grid(sde, num_steps, eps, o):
    """The continuous grid; with ``s_churn`` (``edm_stochastic``) also each step's raised time
    ``t_hat`` where ``r(t_hat) = (1 + gamma_k) r(t_k)`` (Karras et al. 2022, Algorithm 2)."""
    coeffs = continuous_coefficients(sde, num_steps, eps, o)
    if "s_churn" not in o:
        return coeffs
    r = noise_to_signal(coeffs.alpha, coeffs.sigma)
    inside = (r >= o["s_tmin"]) & (r <= o["s_tmax"])
    gamma = np.where(inside, min(o["s_churn"] / num_steps, math.sqrt(2.0) - 1.0), 0.0)
    t = np.asarray(coeffs.t, np.float64)
    t_hat = np.where(gamma > 0, grid.times_for_ratio(sde, (1.0 + gamma) * r, eps,
                                                     t_max=4.0 * sde.T), t)
    alpha_hat, sigma_hat = sde.marginal_coeffs(jnp.asarray(t_hat, coeffs.t.dtype))
    if not np.allclose(noise_to_signal(alpha_hat, sigma_hat), (1.0 + gamma) * r, rtol=1e-4):
        raise ValueError("s_churn raises the noise level beyond what this SDE reaches by "
                         "t = 4 T; lower s_churn or s_tmax")
    return coeffs._replace(t_hat=jnp.asarray(t_hat, coeffs.t.dtype), alpha_hat=alpha_hat,
                           sigma_hat=sigma_hat)


def _edm_step(sde, score_fn, o):
    if "s_churn" not in o:
        return functools.partial(edm_heun, score_fn=score_fn)
    return functools.partial(edm_stochastic, score_fn=score_fn, s_noise=o["s_noise"])


register(Sampler("edm_heun", {"time_grid": ("karras", check_grid)}, _edm_grid, _edm_step,
                 nfe=heun_nfe, deterministic=lambda o: True))
register(Sampler("edm_stochastic", {
    "s_churn": (10.0, check_nonneg), "s_tmin": (0.05, check_nonneg),
    "s_tmax": (50.0, check_nonneg), "s_noise": (1.0, check_positive),
    "time_grid": ("karras", check_grid)}, _edm_grid, _edm_step, nfe=heun_nfe, affine=False,
    deterministic=lambda o: o["s_churn"] == 0))
