r"""``ddpm_ancestral``: ancestral sampling (Ho et al. 2020, Algorithm 2), one case of the
generalized DDIM step that ``ddim.py`` also takes.

Options (defaults first): ``variance="beta_tilde" | "beta"`` (diffusers' default "fixed_small";
score_sde's "fixed_large"), ``chain`` (``None``: the SDE's DDPM chain where it has one),
``time_grid="uniform"``, ``clip_denoised=False`` (``True`` clips ``x0_hat`` to ``[-1, 1]``, or a
range ``(lo, hi)``; diffusers' ``clip_sample``). On an SDE with a DDPM chain (VP, cosine VP,
``DiscreteVPSDE``) the steps run on a strided sub-sequence of the chain's times, ending at
``T / N`` (``eps`` unused); without a chain or with ``chain=False`` on the time grid (SMLD's
ancestral sampler for VE).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from sde_lib._validation import check_choice
from sde_lib.ddpm import VARIANCES
from sde_lib.sampling import grid
from sde_lib.sampling.registry import (
    Sampler,
    check_chain,
    check_clip,
    check_grid,
    continuous_coefficients,
    register,
    step_noise,
    step_times,
)


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
    eps_hat = -sigma_t * score_fn(x, step_times(x, c.t))
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
    return x_mean + jnp.sqrt(cz2) * step_noise(key, x), x_mean


def chain_or_continuous_coefficients(sde, num_steps, eps, options):
    """A strided sub-sequence of the SDE's DDPM chain (``grid.chain_grid``, ending at ``T / N``)
    where it has one and ``options["chain"]`` is not ``False``, else the continuous grid."""
    use_chain = sde.has_chain if options["chain"] is None else options["chain"]
    if use_chain and not sde.has_chain:
        raise ValueError(f"chain=True needs an SDE with a DDPM chain (VPSDE, CosineVPSDE, "
                         f"DiscreteVPSDE), got "
                         f"{type(sde).__name__}")
    if use_chain:
        times = grid.evaluation_times(options["time_grid"], num_steps, sde, sde.T / sde.N)
        return grid.chain_grid(sde, times)
    return continuous_coefficients(sde, num_steps, eps, options)


def _ancestral_step(sde, score_fn, o):
    noise = (lambda v, b2: v) if o["variance"] == "beta_tilde" else (lambda v, b2: b2)
    return functools.partial(generalized_ddim, score_fn=score_fn, eps_scale="posterior",
                             noise_scale=noise, clip=o["clip_denoised"])


# the options ddpm_ancestral and ddim share: the grid (chain or not, time_grid) and clipping
CHAIN_GRID_OPTIONS = {"chain": (None, check_chain), "time_grid": ("uniform", check_grid),
                      "clip_denoised": (None, check_clip)}

register(Sampler("ddpm_ancestral", {
    "variance": ("beta_tilde", functools.partial(check_choice, choices=VARIANCES)),
    **CHAIN_GRID_OPTIONS}, chain_or_continuous_coefficients, _ancestral_step))
