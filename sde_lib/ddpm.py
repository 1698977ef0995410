r"""The discrete DDPM chain (Ho et al. 2020) as the discretization of the VP SDE.

Index convention: ``i = 0 .. N-1`` (Ho et al.'s ``t = i + 1``); ``x_{-1}`` is the data ``x_0``.

* forward step ``q(x_i | x_{i-1}) = N(sqrt(alpha_i) x_{i-1}, beta_i I)`` (Ho et al., Eq. 2),
* marginal ``q(x_i | x_0) = N(sqrt(alpha_bar_i) x_0, (1 - alpha_bar_i) I)`` (Eq. 4),
* posterior ``q(x_{i-1} | x_i, x_0) = N(mu_tilde_i, beta_tilde_i I)`` (Eqs. 6-7),
* ELBO ``L = L_T + sum_{i >= 1} L_{i-1} + L_0`` (Eq. 5).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff, pad_with_last, sum_except_batch
from sde_lib._validation import check_index

VARIANCES = ("beta", "beta_tilde")


def gaussian_kl(mean1: ArrayLike, logvar1: ArrayLike, mean2: ArrayLike,
                logvar2: ArrayLike) -> jax.Array:
    r"""Elementwise ``KL(N(mean1, e^{logvar1}) || N(mean2, e^{logvar2}))`` in nats.

    ``1/2 (-1 + logvar2 - logvar1 + e^{logvar1 - logvar2} + (mean1 - mean2)^2 e^{-logvar2})``.
    Arguments broadcast against each other.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def gaussian_log_likelihood(x: ArrayLike, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """Elementwise log-density of ``N(mean, e^{logvar})`` at ``x`` (continuous data), nats."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * jnp.exp(-logvar))


def discretized_gaussian_log_likelihood(x: ArrayLike, mean: ArrayLike, logvar: ArrayLike,
                                        num_bins: int = 256) -> jax.Array:
    r"""Elementwise log-probability of the bin of ``x`` under ``N(mean, e^{logvar})``.

    The decoder of Ho et al. 2020, Eq. 13: data on ``num_bins`` levels scaled to ``[-1, 1]``,
    bins of width ``2 / (num_bins - 1)`` centred on the levels, the outermost bins extended to
    ``-inf`` and ``+inf``.
    """
    half = 1.0 / (num_bins - 1)
    inv_std = jnp.exp(-0.5 * jnp.asarray(logvar))
    upper = inv_std * (x - mean + half)
    lower = inv_std * (x - mean - half)
    log_cdf_upper = log_ndtr(upper)
    log_sf_lower = log_ndtr(-lower)
    # log(Phi(upper) - Phi(lower)) = log Phi(upper) + log(1 - exp(log Phi(lower) - log Phi(upper)))
    log_delta = log_cdf_upper + jnp.log(-jnp.expm1(jnp.minimum(log_ndtr(lower) - log_cdf_upper,
                                                                -1e-30)))
    # In the upper tail Phi differences underflow; use survival functions there.
    log_delta_tail = log_sf_lower + jnp.log(-jnp.expm1(jnp.minimum(log_ndtr(-upper) - log_sf_lower,
                                                                    -1e-30)))
    log_delta = jnp.where(lower > 0, log_delta_tail, log_delta)
    edge = 1.0 - half
    return jnp.where(x < -edge, log_cdf_upper, jnp.where(x > edge, log_sf_lower, log_delta))


def _check_variance(variance: str) -> None:
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")


class DDPMChain:
    r"""The DDPM forward chain with ``betas`` ``(N,)``, every ``beta_i`` in ``(0, 1)``.

    Attributes (all ``(N,)``): ``betas``, ``alphas = 1 - betas``,
    ``alphas_cumprod[i] = prod_{s <= i} alphas[s]``, ``alphas_cumprod_prev`` (``1`` at ``i = 0``),
    ``posterior_variance`` (``beta_tilde_i = beta_i (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i)``,
    Ho et al. Eq. 7; ``0`` at ``i = 0``) and ``posterior_log_variance_clipped`` (its log with the
    ``i = 0`` entry replaced by that of ``i = 1``, as in Ho et al.'s code).
    """

    def __init__(self, betas: ArrayLike):
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or b.size < 1:
            raise ValueError(f"betas must be a 1-D array with N >= 1 entries, got shape {b.shape}")
        if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
            raise ValueError("betas must lie in the open interval (0, 1), got values in "
                             f"[{b.min()!r}, {b.max()!r}]")
        a = 1.0 - b
        ab = np.cumprod(a)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        first = post_var[1] if b.size > 1 else b[0]
        post_logvar = np.log(np.concatenate([[first], post_var[1:]]))
        large_logvar = np.log(np.concatenate([[first], b[1:]]))
        f = jnp.result_type(float)
        self.betas = jnp.asarray(b, f)
        self.alphas = jnp.asarray(a, f)
        self.alphas_cumprod = jnp.asarray(ab, f)
        self.alphas_cumprod_prev = jnp.asarray(ab_prev, f)
        self.posterior_variance = jnp.asarray(post_var, f)
        self.posterior_log_variance_clipped = jnp.asarray(post_logvar, f)
        self._log_variance = {"beta": jnp.asarray(large_logvar, f),
                              "beta_tilde": self.posterior_log_variance_clipped}
        self._coef_x0 = jnp.asarray(b * np.sqrt(ab_prev) / (1.0 - ab), f)
        self._coef_xi = jnp.asarray((1.0 - ab_prev) * np.sqrt(a) / (1.0 - ab), f)

    def padded(self, size: int) -> DDPMChain:
        """The chain with every array padded to ``size >= N`` entries (its last entry
        repeated): the entries ``i < N`` are unchanged, so a program compiled for chains of
        ``size`` entries takes any shorter chain (``ddpm_negative_elbo``'s strided chains)."""
        return jax.tree.map(lambda a: jnp.asarray(pad_with_last(a, size)), self)

    @classmethod
    def from_sde(cls, sde) -> DDPMChain:
        """The chain of a VP-type SDE: ``DDPMChain(sde.discrete_betas)``."""
        return cls(sde.discrete_betas)

    @property
    def N(self) -> int:
        return int(self.betas.shape[0])

    def q_mean_variance(self, x0: ArrayLike, i: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Mean ``sqrt(alpha_bar_i) x0`` ``(B, *D)`` and variance ``1 - alpha_bar_i`` ``(B,)``."""
        x0 = jnp.asarray(x0)
        ab = self.alphas_cumprod[check_index("i", i, self.N)]
        return batch_coeff(jnp.sqrt(ab), x0) * x0, 1.0 - ab

    def q_sample(self, x0: ArrayLike, i: ArrayLike, noise: ArrayLike) -> jax.Array:
        """``x_i = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) noise`` (Ho et al., Eq. 4)."""
        mean, var = self.q_mean_variance(x0, i)
        return mean + batch_coeff(jnp.sqrt(var), mean) * noise

    def q_posterior(self, x0: ArrayLike, x_i: ArrayLike,
                    i: ArrayLike) -> tuple[jax.Array, jax.Array]:
        r"""Mean ``mu_tilde_i(x_i, x0)`` ``(B, *D)`` and variance ``beta_tilde_i`` ``(B,)`` of
        ``q(x_{i-1} | x_i, x_0)`` (Ho et al., Eqs. 6-7)."""
        x0 = jnp.asarray(x0)
        i = check_index("i", i, self.N)
        mean = batch_coeff(self._coef_x0[i], x0) * x0 + batch_coeff(self._coef_xi[i], x0) * x_i
        return mean, self.posterior_variance[i]

    def predict_x0_from_eps(self, x_i: ArrayLike, i: ArrayLike, eps: ArrayLike) -> jax.Array:
        """``x0 = (x_i - sqrt(1 - alpha_bar_i) eps) / sqrt(alpha_bar_i)`` (inverse of Eq. 4)."""
        x_i = jnp.asarray(x_i)
        ab = batch_coeff(self.alphas_cumprod[check_index("i", i, self.N)], x_i)
        return (x_i - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)

    def predict_eps_from_x0(self, x_i: ArrayLike, i: ArrayLike, x0: ArrayLike) -> jax.Array:
        """``eps = (x_i - sqrt(alpha_bar_i) x0) / sqrt(1 - alpha_bar_i)``."""
        x_i = jnp.asarray(x_i)
        ab = batch_coeff(self.alphas_cumprod[check_index("i", i, self.N)], x_i)
        return (x_i - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)

    def p_mean(self, x_i: ArrayLike, i: ArrayLike, eps: ArrayLike) -> jax.Array:
        r"""Model mean ``1/sqrt(alpha_i) (x_i - beta_i / sqrt(1 - alpha_bar_i) eps)`` (Eq. 11);
        equal to ``q_posterior`` at ``x0 = predict_x0_from_eps(x_i, i, eps)``."""
        x_i = jnp.asarray(x_i)
        i = check_index("i", i, self.N)
        b = batch_coeff(self.betas[i], x_i)
        ab = batch_coeff(self.alphas_cumprod[i], x_i)
        return (x_i - b / jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(1.0 - b)

    def model_log_variance(self, i: ArrayLike, variance: str = "beta_tilde") -> jax.Array:
        """``(B,)`` log of the reverse-step variance ``sigma_i^2``: ``"beta"`` (``beta_i``) or
        ``"beta_tilde"`` (``beta_tilde_i``), Ho et al. Section 3.2; at ``i = 0`` both use
        ``beta_tilde_1`` (only the decoder ``L_0`` sees it)."""
        _check_variance(variance)
        return self._log_variance[variance][check_index("i", i, self.N)]

    def ancestral_step(self, rng: jax.Array, x_i: ArrayLike, i: ArrayLike, eps: ArrayLike,
                       variance: str = "beta_tilde") -> jax.Array:
        r"""``x_{i-1} = p_mean + sigma_i z`` (Ho et al., Algorithm 2); no noise where ``i = 0``."""
        _check_variance(variance)
        x_i = jnp.asarray(x_i)
        mean = self.p_mean(x_i, i, eps)
        std = jnp.where(jnp.asarray(i) > 0, jnp.exp(0.5 * self.model_log_variance(i, variance)),
                        0.0)
        return mean + batch_coeff(std, mean) * jax.random.normal(rng, mean.shape, mean.dtype)

    def prior_kl(self, x0: ArrayLike, last: ArrayLike | None = None) -> jax.Array:
        r"""``L_T = KL(q(x_{N-1} | x_0) || N(0, I))`` summed over data axes, ``(B,)`` nats
        (at the index ``last`` instead of ``N - 1`` when given: a padded chain's last one)."""
        x0 = jnp.asarray(x0)
        i = jnp.full(x0.shape[:1], self.N - 1 if last is None else last)
        mean, var = self.q_mean_variance(x0, i)
        return sum_except_batch(gaussian_kl(mean, batch_coeff(jnp.log(var), mean), 0.0, 0.0))

    def vb_term(self, x0: ArrayLike, x_i: ArrayLike, i: ArrayLike, eps_pred: ArrayLike,
                variance: str = "beta_tilde", discretized: bool = True) -> jax.Array:
        r"""The ELBO term at index ``i`` for the model ``p(x_{i-1} | x_i) = N(p_mean, sigma_i^2)``.

        ``i >= 1``: ``L_{i-1} = KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i))`` (Ho et al. Eq. 5).
        ``i = 0``: ``L_0 = -log p(x_0 | x_{i=0})``, discretized Gaussian decoder for 8-bit data in
        ``[-1, 1]`` (Ho et al. Eq. 13) or a continuous Gaussian density if not ``discretized``.

        Returns:
          ``(B,)`` nats, summed over data axes.
        """
        x0 = jnp.asarray(x0)
        mean = self.p_mean(x_i, i, eps_pred)
        logvar = batch_coeff(self.model_log_variance(i, variance), mean)
        q_mean, q_var = self.q_posterior(x0, x_i, i)
        q_logvar = batch_coeff(jnp.log(jnp.where(jnp.asarray(i) > 0, q_var, 1.0)), mean)
        kl = sum_except_batch(gaussian_kl(q_mean, q_logvar, mean, logvar))
        loglik = (discretized_gaussian_log_likelihood if discretized
                  else gaussian_log_likelihood)(x0, mean, logvar)
        return jnp.where(jnp.asarray(i) > 0, kl, -sum_except_batch(loglik))


_CHAIN_ARRAYS = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev",
                 "posterior_variance", "posterior_log_variance_clipped", "_coef_x0", "_coef_xi")


def _flatten_chain(chain: DDPMChain):
    return tuple(getattr(chain, name) for name in _CHAIN_ARRAYS) + (
        chain._log_variance["beta"],), None


def _unflatten_chain(aux, leaves) -> DDPMChain:
    chain = object.__new__(DDPMChain)
    for name, leaf in zip(_CHAIN_ARRAYS, leaves, strict=False):
        setattr(chain, name, leaf)
    chain._log_variance = {"beta": leaves[-1], "beta_tilde": chain.posterior_log_variance_clipped}
    return chain


# a pytree of its arrays: a jit argument (traced, not a compile-time constant) and tree.map-able
jax.tree_util.register_pytree_node(DDPMChain, _flatten_chain, _unflatten_chain)
