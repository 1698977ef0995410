r"""Weightings of the denoising losses: one small function each.

Two families, by the space the squared error is measured in:

* **score-space** ``lambda(t)``, ``(sde, t) -> (B,)``: the factor in front of
  ``||s_theta(x_t, t) - grad log p_{0t}(x_t | x_0)||^2`` in denoising score matching
  (Song et al. 2021, Eq. 7) and of the noise-conditional sliced / explicit objectives.
  ``"sigma2"`` (``sigma_t^2``, the default of score_sde, which makes the eps-space error
  unweighted), ``"likelihood"`` (``g(t)^2``, Song et al. 2021 maximum likelihood training, Thm 1:
  with the 1/2 of DSM it is the integrand of the continuous-time ELBO) and ``"none"`` (``1``).
* **target-space** weights ``w`` of the losses ``1/2 w ||eps_theta - eps||^2`` and
  ``1/2 w ||x0_theta - x0||^2``: ``"simple"`` (``1``, Ho et al. 2020 Eq. 14) and ``"elbo"``.
  The 1/2 is the losses' (every loss here is ``1/2 sum`` per example, score_sde's convention),
  never a weight's. Discrete (``(chain, i) -> (B,)``, with a reverse variance ``sigma_i^2`` of
  ``chain.model_log_variance``):

  - eps: ``beta_i^2 / (sigma_i^2 alpha_i (1 - alpha_bar_i))`` (Ho et al. 2020, Eq. 12, times 2);
  - x0: ``c_i^2 / sigma_i^2`` with ``c_i = beta_i sqrt(alpha_bar_{i-1}) / (1 - alpha_bar_i)``,
    the x0 coefficient of the posterior mean (Ho et al. 2020, Eq. 7).

  For ``i >= 1`` both losses equal ``KL(q(x_{i-1}|x_i,x_0) || p_theta(x_{i-1}|x_i))`` up to the
  model-independent constant of Ho et al. Eq. 8 (zero for ``sigma_i^2 = beta_tilde_i``).
  Continuous (``(sde, t) -> (B,)``), the limit ``N -> infinity`` of ``N / T`` times these:
  eps ``g^2 / sigma^2``, x0 ``g^2 alpha^2 / sigma^4 = -SNR'(t)`` (Kingma et al. 2021, Eq. 17);
  both losses equal DSM with the likelihood weighting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def sigma2_weighting(sde, t: ArrayLike) -> jax.Array:
    """``lambda(t) = sigma_t^2`` (Song et al. 2021, Eq. 7 and Appendix C; score_sde's default)."""
    _, sigma = sde.marginal_coeffs(t)
    return sigma**2


def likelihood_weighting(sde, t: ArrayLike) -> jax.Array:
    """``lambda(t) = g(t)^2`` (Song et al. 2021, maximum likelihood training, Theorem 1)."""
    return sde.diffusion_coeff(t) ** 2


def unit_weighting(sde, t: ArrayLike) -> jax.Array:
    """``lambda(t) = 1`` (Vincent 2011's unweighted DSM; Ho et al. 2020's simple loss)."""
    return jnp.ones(jnp.shape(t), jnp.result_type(jnp.asarray(t).dtype, float))


def eps_elbo_weight(sde, t: ArrayLike) -> jax.Array:
    """Continuous ELBO weight ``w = g(t)^2 / sigma_t^2`` of ``1/2 w ||eps_theta - eps||^2``."""
    _, sigma = sde.marginal_coeffs(t)
    return sde.diffusion_coeff(t) ** 2 / sigma**2


def x0_elbo_weight(sde, t: ArrayLike) -> jax.Array:
    """Continuous ELBO weight ``w = g^2 alpha^2 / sigma^4 = -SNR'(t)`` of
    ``1/2 w ||x0_theta - x0||^2`` (Kingma et al. 2021, Eq. 17)."""
    alpha, sigma = sde.marginal_coeffs(t)
    return sde.diffusion_coeff(t) ** 2 * alpha**2 / sigma**4


def ddpm_unit_weight(chain, i: ArrayLike, variance: str = "beta_tilde") -> jax.Array:
    """Weight ``1`` of the simple loss (Ho et al. 2020, Eq. 14), float ``(B,)``."""
    return jnp.ones(jnp.shape(i), jnp.result_type(float))


def ddpm_eps_elbo_weight(chain, i: ArrayLike, variance: str = "beta_tilde") -> jax.Array:
    r"""``w_i = beta_i^2 / (sigma_i^2 alpha_i (1 - alpha_bar_i))``:
    ``1/2 w_i ||eps_theta - eps||^2`` is Ho et al. 2020's Eq. 12 term, with
    ``sigma_i^2 = exp(chain.model_log_variance(i, variance))`` (``beta_i`` or ``beta_tilde_i``;
    at ``i = 0`` both are ``beta_tilde_1``, Ho et al.'s clipping)."""
    sigma2 = jnp.exp(chain.model_log_variance(i, variance))
    beta = chain.betas[i]
    return beta**2 / (sigma2 * chain.alphas[i] * (1.0 - chain.alphas_cumprod[i]))


def ddpm_x0_elbo_weight(chain, i: ArrayLike, variance: str = "beta_tilde") -> jax.Array:
    r"""``w_i = c_i^2 / sigma_i^2`` with ``c_i = beta_i sqrt(alpha_bar_{i-1}) / (1 - alpha_bar_i)``
    (Ho et al. 2020, Eqs. 7 and 8; the loss is ``1/2 w_i ||x0_theta - x0||^2``), ``sigma_i^2`` as
    in ``ddpm_eps_elbo_weight``."""
    sigma2 = jnp.exp(chain.model_log_variance(i, variance))
    c = chain.betas[i] * jnp.sqrt(chain.alphas_cumprod_prev[i]) / (1.0 - chain.alphas_cumprod[i])
    return c**2 / sigma2


SCORE_WEIGHTINGS = {
    "sigma2": sigma2_weighting,
    "likelihood": likelihood_weighting,
    "none": unit_weighting,
}

# target -> weighting name -> weight function; continuous takes (sde, t), discrete (chain, i).
CONTINUOUS_TARGET_WEIGHTINGS = {
    "eps": {"simple": unit_weighting, "elbo": eps_elbo_weight},
    "x0": {"simple": unit_weighting, "elbo": x0_elbo_weight},
}
DISCRETE_TARGET_WEIGHTINGS = {
    "eps": {"simple": ddpm_unit_weight, "elbo": ddpm_eps_elbo_weight},
    "x0": {"simple": ddpm_unit_weight, "elbo": ddpm_x0_elbo_weight},
}
