r"""Exact sampler error on Gaussian data: the law of a sampler's output, with no Monte Carlo.

For Gaussian data ``N(mu, diag(s^2))`` and a linear SDE, ``p_t = N(alpha_t mu, diag(alpha_t^2 s^2
+ sigma_t^2))`` and its score ``-(x - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2)`` is affine in
``x``. Every affine sampler step (``Sampler.affine``: Euler-Maruyama, reverse diffusion, DDPM
ancestral with either variance, DDIM with any ``eta``, probability-flow Euler and Heun) then maps
each coordinate as ``x_{k+1} = a_k x_k + b_k + c_k z_k`` with ``z_k ~ N(0, 1)`` independent of
``x_k``, so from the prior ``N(0, prior_std^2)`` the output is Gaussian with

    m_{k+1} = a_k m_k + b_k,     v_{k+1} = a_k^2 v_k + c_k^2,

and the last step's noiseless mean (what the driver returns) has variance ``a_K^2 v_K``.
``a_k, b_k`` come from the sampler's own step at ``x = 0`` and ``x = 1``, and ``c_k`` from its
noise, which a step draws as ``jax.random.normal(key, x.shape)`` from its key: the law is that of
the registered sampler itself, not of a transcription. ``gaussian_kl`` and ``gaussian_w2`` then
give the exact KL divergence and 2-Wasserstein distance of the sampler's output to the data.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from sde_lib.sampling import SAMPLERS, get_sampler


class GaussianLaw(NamedTuple):
    """A Gaussian with diagonal covariance: ``mean`` and ``var``, each ``(D,)``."""

    mean: jax.Array
    var: jax.Array


def gaussian_score_fn(sde, mean: ArrayLike, var: ArrayLike):
    r"""The exact score of ``p_t`` for data ``N(mean, diag(var))`` under ``sde``:
    ``score_fn(x (B, D), t (B,)) = -(x - alpha_t mean) / (alpha_t^2 var + sigma_t^2)``."""
    mean = jnp.asarray(mean)[None]
    var = jnp.broadcast_to(jnp.asarray(var, mean.dtype), mean.shape)

    def score_fn(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha[:, None], sigma[:, None]
        return -(x - alpha * mean) / (alpha**2 * var + sigma**2)

    return score_fn


def _data(mean, var) -> GaussianLaw:
    mean = jnp.asarray(mean)
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"mean must be a vector (D,), got shape {mean.shape}")
    var = jnp.broadcast_to(jnp.asarray(var, mean.dtype), mean.shape)
    if not bool(jnp.all(var > 0)):
        raise ValueError("var must be positive")
    return GaussianLaw(mean, var)


def gaussian_sampler_law(sde, mean: ArrayLike, var: ArrayLike, method: str,
                         num_steps: int, eps: float = 1e-3, **options) -> GaussianLaw:
    """The exact law of ``sde_lib.sample(..., method, num_steps, eps, **options)`` with the exact
    score of the data ``N(mean, diag(var))``.

    Args:
      sde: a linear SDE (``marginal_coeffs``, ``prior_std``).
      mean, var: the data's mean ``(D,)`` and variances (``(D,)`` or a scalar).
      method, num_steps, eps, options: as for ``sde_lib.sample``.

    Returns:
      ``GaussianLaw(mean, var)`` of the samples, each ``(D,)``.

    Raises:
      ValueError: a method that is not affine (``pc``) or adaptive, ``clip_denoised`` (a
        nonlinear step), or bad options, naming them.
    """
    data = _data(mean, var)
    sampler = get_sampler(method)
    if sampler.adaptive or not sampler.affine:
        affine = [name for name, s in SAMPLERS.items() if s.affine and not s.adaptive]
        raise ValueError(f"method must be an affine fixed-step sampler, one of {affine}, got "
                         f"{method!r}")
    opts = sampler.check_options(options)
    if opts.get("clip_denoised") is not None:
        raise ValueError("clip_denoised makes the step nonlinear; its law is not Gaussian")
    step, coeffs = sampler.build(sde, gaussian_score_fn(sde, *data), num_steps, eps, opts)
    dtype = data.mean.dtype
    coeffs = jax.tree.map(lambda a: jnp.asarray(a, dtype), coeffs)
    x = jnp.stack([jnp.zeros_like(data.mean), jnp.ones_like(data.mean)])
    keys = jax.random.split(jax.random.key(0), coeffs.t.shape[0])

    def body(carry, inputs):
        m, v, _ = carry
        key, c = inputs
        x_next, x_mean = step(key, x, c)
        a, b = x_mean[1] - x_mean[0], x_mean[0]
        z = jax.random.normal(key, x.shape, dtype)
        c_noise = jnp.sum((x_next - x_mean) * z, 0) / jnp.sum(z * z, 0)  # exact: noise = c z
        return (a * m + b, a**2 * v + c_noise**2, a**2 * v), None

    prior = jnp.full_like(data.mean, sde.prior_std**2)
    (m, _, v_mean), _ = lax.scan(body, (jnp.zeros_like(data.mean), prior, prior),
                                 (keys, coeffs))
    return GaussianLaw(m, v_mean)


def gaussian_kl(q: GaussianLaw, p: GaussianLaw) -> jax.Array:
    r"""``KL(q || p)`` in nats for diagonal Gaussians: ``1/2 sum(v_q / v_p + (m_q - m_p)^2 / v_p
    - 1 + log(v_p / v_q))``."""
    return 0.5 * jnp.sum(q.var / p.var + (q.mean - p.mean) ** 2 / p.var - 1.0
                         + jnp.log(p.var / q.var))


def gaussian_w2(q: GaussianLaw, p: GaussianLaw) -> jax.Array:
    r"""The 2-Wasserstein distance of diagonal Gaussians: ``sqrt(|m_q - m_p|^2 + |sqrt(v_q) -
    sqrt(v_p)|^2)`` (Dowson & Landau 1982, commuting covariances)."""
    return jnp.sqrt(jnp.sum((q.mean - p.mean) ** 2 + (jnp.sqrt(q.var) - jnp.sqrt(p.var)) ** 2))
