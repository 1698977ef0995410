r"""Variance-exploding SDEs: the VE SDE of SMLD and Brownian motion ``dX = sigma dW``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sde_lib._validation import check_ordered, check_positive, check_times
from sde_lib.sde import LinearSDE


class VESDE(LinearSDE):
    r"""VE SDE (Song et al. 2021, Eq. 9), ``sigma(t) = sigma_min (sigma_max / sigma_min)^{t/T}``:

    .. math:: dx = \sqrt{d\sigma^2(t)/dt}\,dW
              = \sigma(t)\sqrt{2 \log(\sigma_{max}/\sigma_{min}) / T}\,dW.

    The exact transition from ``x_0`` at ``t = 0`` has variance ``sigma(t)^2 - sigma_min^2``
    (score_sde instead reports ``sigma(t)``, i.e. data already perturbed by ``sigma_min``).
    Prior ``N(0, sigma_max^2 I)``. ``discretize`` is the SMLD step (Song et al. 2021, Eq. 47):
    ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)`` with ``sigma_i = sigma(t_i)``, ``t_i = (i + 1) T / N``
    and ``sigma_{-1} = sigma_min``, so the steps' variances add up to the exact marginal.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000,
                 T: float = 1.0):
        super().__init__(N, T)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        check_ordered("sigma_min", sigma_min, "sigma_max", sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: ArrayLike) -> jax.Array:
        """``sigma(t)``, shaped as ``t``."""
        return self.sigma_min * jnp.exp(jnp.asarray(t) / self.T * self._log_ratio)

    @property
    def discrete_sigmas(self) -> jax.Array:
        """``(N,)`` noise levels ``sigma(t_i)``, ``t_i = (i + 1) T / N``."""
        t = np.arange(1, self.N + 1) / self.N
        return jnp.asarray(self.sigma_min * np.exp(t * self._log_ratio),
                           dtype=jnp.result_type(float))

    def drift_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.zeros(jnp.shape(t), dtype=jnp.result_type(float))

    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio / self.T)

    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(t)
        std = self.sigma_min * jnp.sqrt(jnp.expm1(2 * t / self.T * self._log_ratio))
        return jnp.ones(t.shape, dtype=std.dtype), std

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def discretize(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        i = self.time_to_index(check_times("t", t, self.T))
        sigmas = self.discrete_sigmas
        sigma_prev = jnp.where(i == 0, self.sigma_min, sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(jnp.asarray(x)), jnp.sqrt(sigmas[i] ** 2 - sigma_prev**2)


class BrownianMotionSDE(LinearSDE):
    r"""Brownian motion ``dX = sigma dW``: transition ``N(x_0, sigma^2 t I)``.

    The prior ``N(0, sigma^2 T I)`` ignores the data's spread, as the VE prior does.
    """

    def __init__(self, sigma: float = 1.0, N: int = 1000, T: float = 1.0):
        super().__init__(N, T)
        self.sigma = check_positive("sigma", sigma)

    def drift_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.zeros(jnp.shape(t), dtype=jnp.result_type(float))

    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(t), self.sigma, dtype=jnp.result_type(float))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(t)
        return jnp.ones(t.shape, dtype=jnp.result_type(float)), self.sigma * jnp.sqrt(t)

    @property
    def prior_std(self) -> float:
        return self.sigma * math.sqrt(self.T)
