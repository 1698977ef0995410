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

import jax
import jax.numpy as jnp
from jax import lax

from sde_lib._checks import batch_coeff, sum_except_batch


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
    cz2 = noise_scale(v, b2)
    if eps_scale == "posterior":
        c_eps = a * sigma_s**2 / sigma_t
    else:
        c_eps = jnp.sqrt(jnp.maximum(sigma_s**2 - cz2, 0.0))
    x_mean = alpha_s * x0_hat + c_eps * eps_hat
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
