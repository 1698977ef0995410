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

For any data (a mixture, a trained score) a deterministic sampler (``Sampler.deterministic``:
probability-flow Euler and Heun, DDIM with ``eta = 0``) is a map ``x_0 = Phi(x_T)`` of the
prior draw, and the density of its output follows by the change of variables along that
discrete map: ``log q(x_0) = log p_T(x_T) - log |det D Phi(x_T)|`` (``flow_log_density``; the
Jacobian by forward-mode autodiff through every step, exact in low dimension). Then
``KL(q || p) = E_{x_T}[log q(Phi(x_T)) - log p(Phi(x_T))]`` needs Monte Carlo only over the prior
draws (``flow_kl``, with its standard error).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from sde_lib.sampling import SAMPLERS, get_sampler, scan_steps


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


def sampler_map(sde, score_fn, method: str, num_steps: int, eps: float = 1e-3, **options):
    """The map ``Phi: x_T (B, *D) -> x_0 (B, *D)`` of a deterministic fixed-step sampler (its
    own steps, as ``sde_lib.sample`` runs them after the prior draw).

    Raises:
      ValueError: a method (or options) that is not deterministic, naming the ones that are.
    """
    sampler = get_sampler(method)
    opts = sampler.check_options(options)
    if sampler.adaptive or not sampler.deterministic(opts):
        names = [name for name, s in SAMPLERS.items()
                 if not s.adaptive and s.deterministic(s.check_options({}))]
        raise ValueError(f"method must be a deterministic fixed-step sampler, one of {names} "
                         f"(ddim with eta=0), got {method!r} with {options}")
    step, coeffs = sampler.build(sde, score_fn, num_steps, eps, opts)
    return lambda x_T: scan_steps(step, jax.random.key(0), x_T, coeffs)


def flow_log_density(sde, score_fn, x_T: ArrayLike, method: str, num_steps: int,
                     eps: float = 1e-3, **options) -> tuple[jax.Array, jax.Array]:
    r"""``(x_0, log q(x_0))`` for prior draws ``x_T (B, d)``: the samples of a deterministic
    sampler and their log-density under its output law,
    ``log q(x_0) = log p_T(x_T) - log |det D Phi(x_T)|`` (nats, ``(B,)``), with the ``d x d``
    Jacobian of the whole discrete map by ``jax.jacfwd``."""
    x_T = jnp.asarray(x_T)
    if x_T.ndim != 2:
        raise ValueError(f"x_T must be (B, d) (flat data), got shape {x_T.shape}")
    phi = sampler_map(sde, score_fn, method, num_steps, eps, **options)
    jac = jax.vmap(jax.jacfwd(lambda v: phi(v[None])[0]))(x_T)
    _, logdet = jnp.linalg.slogdet(jac)
    return phi(x_T), sde.prior_logp(x_T) - logdet


def flow_kl(rng: jax.Array, sde, score_fn, log_prob, num: int, dim: int, method: str,
            num_steps: int, eps: float = 1e-3, **options) -> tuple[jax.Array, jax.Array]:
    r"""``(KL(q || p), its standard error)`` in nats between a deterministic sampler's output law
    ``q`` and the data law with log-density ``log_prob(x (B, d)) -> (B,)``: the mean of
    ``log q(x_0) - log p(x_0)`` over ``num`` prior draws (``flow_log_density``); scalar arrays,
    so it can run under ``jax.jit``."""
    x_T = sde.prior_sampling(rng, (num, dim))
    x0, log_q = flow_log_density(sde, score_fn, x_T, method, num_steps, eps, **options)
    diff = log_q - log_prob(x0)
    return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(num)
