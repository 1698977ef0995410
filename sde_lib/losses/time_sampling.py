r"""Sampling of the training time: ``t ~ U(eps, T)``, ``i ~ U{0..N-1}`` and importance sampling.

Each continuous sampler returns ``(t, weight)``, both ``(B,)``, such that for any ``f``

.. math:: \mathbb E[\,\mathrm{weight}\; f(t)\,] = \frac{1}{T - \epsilon}\int_\epsilon^T f(t)\,dt,

so a loss multiplied by ``weight`` has the same expectation whichever sampler drew ``t``.

The likelihood weighting ``lambda(t) = g(t)^2`` of Song et al. 2021 (maximum likelihood training
of score-based diffusion models) makes the eps-space integrand
``g^2 / sigma^2 ||eps_theta - eps||^2`` large near ``t = 0``; sampling ``t`` with density
``p(t) \propto g(t)^2 / sigma_t^2`` removes that factor. For every linear SDE
``g^2 / sigma^2 = -d/dt log SNR(t)`` with ``SNR = alpha^2 / sigma^2`` (from
``d(sigma^2 / alpha^2)/dt = g^2 / alpha^2``), so the CDF is
``F(t) = (log SNR(eps) - log SNR(t)) / (log SNR(eps) - log SNR(T))`` and ``t = F^{-1}(u)`` is found
by bisection on the monotone ``log SNR`` (any linear SDE, no closed-form inverse needed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sde_lib._validation import check_num_steps, check_positive

DEFAULT_EPS = 1e-5


def check_time_eps(sde, eps: float) -> float:
    """Returns ``eps`` if ``0 < eps < sde.T``, else raises ValueError naming ``eps``."""
    eps = check_positive("eps", eps)
    if not eps < sde.T:
        raise ValueError(f"eps must be smaller than the SDE's T={sde.T!r}, got eps={eps!r}")
    return eps


def log_snr(sde, t: ArrayLike) -> jax.Array:
    """``log(alpha_t^2 / sigma_t^2)`` of a linear SDE, shaped as ``t``; decreasing in ``t``."""
    alpha, sigma = sde.marginal_coeffs(t)
    return 2.0 * (jnp.log(alpha) - jnp.log(sigma))


def sample_time_uniform(rng: jax.Array, sde, batch_size: int, eps: float = DEFAULT_EPS,
                        dtype=None) -> tuple[jax.Array, jax.Array]:
    """``t ~ U(eps, T)`` (Song et al. 2021, Eq. 7) and unit weights.

    Returns:
      ``t`` and ``weight`` (all ones), each ``(batch_size,)``.
    """
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(rng, (batch_size,), dtype)
    return eps + u * (sde.T - eps), jnp.ones((batch_size,), dtype)


def likelihood_time_density(sde, t: ArrayLike, eps: float = DEFAULT_EPS) -> jax.Array:
    r"""Density ``p(t) = g(t)^2 / (sigma_t^2 Z)`` on ``[eps, T]``, with
    ``Z = log SNR(eps) - log SNR(T)``; shaped as ``t``."""
    _, sigma = sde.marginal_coeffs(t)
    Z = log_snr(sde, jnp.asarray(eps)) - log_snr(sde, jnp.asarray(sde.T))
    return sde.diffusion_coeff(t) ** 2 / (sigma**2 * Z)


def sample_time_importance(rng: jax.Array, sde, batch_size: int, eps: float = DEFAULT_EPS,
                           dtype=None, num_bisection: int = 64) -> tuple[jax.Array, jax.Array]:
    r"""``t ~ p(t) \propto g(t)^2 / sigma_t^2`` on ``[eps, T]``, ``weight = 1 / ((T - eps) p(t))``.

    The importance sampling of Song et al. 2021 (maximum likelihood training) for the
    likelihood weighting. ``t`` solves ``log SNR(t) = log SNR(eps) - u Z`` with ``u ~ U(0, 1)``
    (the same ``u`` as ``jax.random.uniform(rng, (batch_size,), dtype)``), by ``num_bisection``
    halvings of ``[eps, T]`` in one ``lax.fori_loop``.

    Returns:
      ``t`` and ``weight``, each ``(batch_size,)``.
    """
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(rng, (batch_size,), dtype)
    l_eps = log_snr(sde, jnp.asarray(eps, dtype))
    l_T = log_snr(sde, jnp.asarray(sde.T, dtype))
    target = l_eps - u * (l_eps - l_T)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        before = log_snr(sde, mid) > target  # log SNR decreases: the root lies above mid
        return jnp.where(before, mid, lo), jnp.where(before, hi, mid)

    lo = jnp.full((batch_size,), eps, dtype)
    hi = jnp.full((batch_size,), sde.T, dtype)
    lo, hi = jax.lax.fori_loop(0, num_bisection, bisect, (lo, hi))
    t = 0.5 * (lo + hi)
    weight = 1.0 / ((sde.T - eps) * likelihood_time_density(sde, t, eps))
    return t, weight


def sample_index_uniform(rng: jax.Array, N: int, batch_size: int) -> jax.Array:
    """DDPM step ``i ~ U{0, ..., N-1}`` (Ho et al. 2020, Algorithm 1), int32 ``(batch_size,)``."""
    check_num_steps("N", N)
    return jax.random.randint(rng, (batch_size,), 0, N)


TIME_SAMPLERS = {"uniform": sample_time_uniform, "importance": sample_time_importance}
