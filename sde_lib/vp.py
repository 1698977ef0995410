r"""Variance-preserving SDEs: linear and cosine beta(t), sub-VP, and Ornstein-Uhlenbeck.

The VP SDE (Song et al. 2021, Eq. 11) is the continuous limit of the DDPM chain:

.. math:: dx = -\tfrac12 \beta(t) x\,dt + \sqrt{\beta(t)}\,dW,

with ``alpha_t = exp(-B(t) / 2)``, ``sigma_t^2 = 1 - exp(-B(t))`` where ``B(t) = \int_0^t beta``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff
from sde_lib._validation import check_positive, check_times
from sde_lib.sde import AbstractSDE, LinearSDE


def _as_float_array(values: np.ndarray) -> jax.Array:
    return jnp.asarray(values, dtype=jnp.result_type(float))


class _Summary(str):
    """A string printed as is by ``repr`` (a summary in place of a long argument)."""

    def __repr__(self) -> str:
        return str(self)


class _LinearBetaSDE(LinearSDE):
    """The linear ``beta(t)`` shared by the VP and sub-VP SDEs, drift ``-beta(t) x / 2``, prior
    ``N(0, I)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000,
                 T: float = 1.0):
        super().__init__(N, T)
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_min > self.beta_max:
            raise ValueError(f"beta_min must be <= beta_max (inverted schedule), got "
                             f"beta_min={beta_min!r}, beta_max={beta_max!r}")

    def beta(self, t: ArrayLike) -> jax.Array:
        """``beta(t)``, shaped as ``t``."""
        return self.beta_min + jnp.asarray(t) / self.T * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: ArrayLike) -> jax.Array:
        """``B(t) = int_0^t beta(s) ds``, shaped as ``t``."""
        t = jnp.asarray(t)
        return self.beta_min * t + 0.5 * t**2 / self.T * (self.beta_max - self.beta_min)

    def drift_coeff(self, t: ArrayLike) -> jax.Array:
        return -0.5 * self.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_LinearBetaSDE):
    r"""VP SDE with linear ``beta(t) = beta_min + t / T (beta_max - beta_min)``.

    ``log alpha_t = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min`` for ``T = 1``
    (Song et al. 2021, Eq. 33). The prior is ``N(0, I)``.

    ``discretize`` is exactly one DDPM step (Ho et al. 2020, Eq. 2):
    ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`` with
    ``discrete_betas = linspace(beta_min / N, beta_max / N, N)``.

    Args:
      beta_min: ``beta(0) > 0``.
      beta_max: ``beta(T) >= beta_min``.
      N: number of discrete steps (DDPM's T).
      T: end time.
    """

    has_chain = True

    @property
    def discrete_betas(self) -> jax.Array:
        """``(N,)`` DDPM betas ``linspace(beta_min / N, beta_max / N, N)`` (scaled by ``T``)."""
        scale = self.T / self.N
        return _as_float_array(np.linspace(self.beta_min * scale, self.beta_max * scale, self.N))

    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.sqrt(self.beta(t))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        B = self.integrated_beta(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def discretize(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        r"""One DDPM step into index ``i = time_to_index(t)``: ``f = (sqrt(1 - beta_i) - 1) x``,
        ``G = sqrt(beta_i)`` (Ho et al. 2020, Eq. 2; Song et al. 2021, Eq. 45)."""
        x = jnp.asarray(x)
        beta_i = self.discrete_betas[self.time_to_index(check_times("t", t, self.T))]
        return batch_coeff(jnp.sqrt(1.0 - beta_i) - 1.0, x) * x, jnp.sqrt(beta_i)


class CosineVPSDE(VPSDE):
    r"""VP SDE with the cosine schedule of Nichol & Dhariwal 2021 (Eq. 17).

    ``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))`` with ``phi(t) = (t / T + s) / (1 + s) pi / 2``,
    so ``beta(t) = -d log alpha_bar / dt = pi / (T (1 + s)) tan(phi(t))``. That rate diverges at
    ``t = T``; like Nichol & Dhariwal's clip of the discrete betas at 0.999, it is clipped here
    at ``beta_max``, and ``B(t)`` is integrated exactly with the clip (constant rate beyond the
    time ``t_c`` where ``beta(t_c) = beta_max``). The default ``beta_max = 999 / T`` matches the
    discrete clip 0.999 at ``N = 1000``.

    ``discrete_betas`` are Nichol & Dhariwal's: ``min(1 - alpha_bar(t_i) / alpha_bar(t_{i-1}),
    0.999)`` with ``t_i = (i + 1) T / N``, so ``DDPMChain.from_sde`` gives their chain.
    """

    def __init__(self, s: float = 0.008, beta_max: float = 999.0, N: int = 1000, T: float = 1.0,
                 max_discrete_beta: float = 0.999):
        AbstractSDE.__init__(self, N, T)
        self.s = check_positive("s", s)
        self.beta_max = check_positive("beta_max", beta_max)
        self.max_discrete_beta = check_positive("max_discrete_beta", max_discrete_beta)
        if self.max_discrete_beta >= 1.0:
            raise ValueError(f"max_discrete_beta must be in (0, 1), got {max_discrete_beta!r}")
        self._rate = math.pi / (2 * self.T * (1 + self.s))  # d phi / dt
        self._phi0 = self.s / (1 + self.s) * math.pi / 2
        phi_c = math.atan(self.beta_max / (2 * self._rate))
        self.t_clip = min(self.T, (phi_c - self._phi0) / self._rate)
        self.beta_min = 2 * self._rate * math.tan(self._phi0)

    def _phi(self, t: ArrayLike) -> jax.Array:
        return self._phi0 + self._rate * jnp.asarray(t)

    def beta(self, t: ArrayLike) -> jax.Array:
        t = jnp.minimum(jnp.asarray(t), self.t_clip)
        return 2 * self._rate * jnp.tan(self._phi(t))

    def integrated_beta(self, t: ArrayLike) -> jax.Array:
        t = jnp.asarray(t)
        tc = jnp.minimum(t, self.t_clip)
        smooth = -2.0 * (jnp.log(jnp.cos(self._phi(tc))) - math.log(math.cos(self._phi0)))
        return smooth + self.beta(self.t_clip) * jnp.maximum(t - self.t_clip, 0.0)

    @property
    def discrete_betas(self) -> jax.Array:
        t = np.arange(self.N + 1) / self.N  # t / T
        phi = (t + self.s) / (1 + self.s) * np.pi / 2
        alpha_bar = np.cos(phi) ** 2 / np.cos(phi[0]) ** 2
        betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
        return _as_float_array(np.minimum(betas, self.max_discrete_beta))


class DiscreteVPSDE(VPSDE):
    r"""The DDPM chain as a VP SDE: ``beta(t)`` constant on each of the ``N`` chain intervals.

    On ``[i T / N, (i + 1) T / N)`` the rate is ``beta(t) = -N / T log(1 - beta_i)``, so the exact
    marginal at the chain time ``t_i = (i + 1) T / N`` is the chain's:
    ``alpha_{t_i}^2 = alpha_bar_i`` and ``sigma_{t_i}^2 = 1 - alpha_bar_i`` (Ho et al. 2020,
    Eq. 4), and ``discretize`` at ``t_i`` is the chain's step (Eq. 2). Between chain times it is
    the VP SDE of Song et al. 2021, Eq. 11, with that rate. A model trained on the chain (the
    ``ddpm_*`` losses) and the samplers and likelihoods that use it then read the same
    ``(alpha, sigma)`` from ``marginal_coeffs``: nothing converts eps to a score with one sigma
    and back with another.

    ``discrete_betas`` of a copy with another number of steps ``K`` (``with_num_steps``, e.g. for
    reverse diffusion) are the exact ``K``-step transitions
    ``1 - alpha_{t_k}^2 / alpha_{t_{k-1}}^2``.

    Args:
      betas: ``(N,)`` chain betas in ``(0, 1)``; ``None`` for DDPM's linear schedule
        ``linspace(beta_min / N, beta_max / N, N)`` (scaled by ``T``).
      beta_min, beta_max, N: the linear schedule, used only when ``betas`` is ``None``.
      T: end time.
    """

    def __init__(self, betas: ArrayLike | None = None, *, beta_min: float = 0.1,
                 beta_max: float = 20.0, N: int = 1000, T: float = 1.0):
        if betas is None:  # DDPM's linear schedule, exactly DiscreteVPSDE.from_sde(VPSDE(...))
            betas = VPSDE(beta_min, beta_max, N, T).discrete_betas
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or b.size < 1 or not np.all(np.isfinite(b)) or np.any(b <= 0) \
                or np.any(b >= 1):
            raise ValueError(f"betas must be a 1-D array of N >= 1 values in (0, 1), got shape "
                             f"{b.shape} with values in [{b.min(initial=np.inf)!r}, "
                             f"{b.max(initial=-np.inf)!r}]")
        AbstractSDE.__init__(self, b.size, T)
        self._betas = b
        self._num_chain_steps = b.size
        rates = -np.log1p(-b)  # integral of beta(t) over each chain interval
        self._B_start = np.concatenate([[0.0], np.cumsum(rates)[:-1]])
        self._rates = rates * b.size / self.T
        self.beta_min = float(self._rates.min())
        self.beta_max = float(self._rates.max())

    def _repr_args(self) -> dict:
        """``beta_min, beta_max, N, T`` when the chain is DDPM's linear schedule (checked by
        rebuilding it), else ``betas`` summarised (not evaluable) and ``T``."""
        b, n, T = self._betas, self._num_chain_steps, self.T
        for digits in (6, 17):  # the shortest decimals that rebuild exactly the same betas
            lo, hi = (float(f"{v * n / T:.{digits}g}") for v in (b[0], b[-1]))
            try:
                if np.array_equal(DiscreteVPSDE(beta_min=lo, beta_max=hi, N=n, T=T)._betas, b):
                    return {"beta_min": lo, "beta_max": hi, "N": n, "T": T}
            except ValueError:
                break
        return {"betas": _Summary(f"<{n} betas in [{b.min():.6g}, {b.max():.6g}]>"), "T": T}

    def __repr__(self) -> str:
        """As ``AbstractSDE``'s, with ``.with_num_steps(K)`` for a copy of ``K != N`` steps."""
        steps = "" if self.N == self._num_chain_steps else f".with_num_steps({self.N})"
        return super().__repr__() + steps

    @classmethod
    def from_sde(cls, sde) -> DiscreteVPSDE:
        """The chain of an SDE with ``discrete_betas`` (``VPSDE``, ``CosineVPSDE``) as an SDE."""
        return cls(np.asarray(sde.discrete_betas, np.float64), T=sde.T)

    def _interval(self, t: ArrayLike) -> jax.Array:
        n = self._num_chain_steps
        return jnp.clip(jnp.floor(jnp.asarray(t) * (n / self.T)), 0, n - 1).astype(jnp.int32)

    def beta(self, t: ArrayLike) -> jax.Array:
        return _as_float_array(self._rates)[self._interval(t)]

    def integrated_beta(self, t: ArrayLike) -> jax.Array:
        t = jnp.asarray(t)
        j = self._interval(t)
        dt = t - j * (self.T / self._num_chain_steps)
        return _as_float_array(self._B_start)[j] + dt * _as_float_array(self._rates)[j]

    @property
    def discrete_betas(self) -> jax.Array:
        if self.N == self._num_chain_steps:
            return _as_float_array(self._betas)
        n = self._num_chain_steps
        t = np.arange(self.N + 1) * self.T / self.N
        j = np.clip(np.floor(t * n / self.T), 0, n - 1).astype(np.int64)
        B = self._B_start[j] + (t - j * self.T / n) * self._rates[j]
        return _as_float_array(-np.expm1(-np.diff(B)))


class subVPSDE(_LinearBetaSDE):  # noqa: N801 -- the name score_sde users know (API.md)
    r"""sub-VP SDE (Song et al. 2021, Eq. 12) with the linear ``beta(t)`` of ``VPSDE``:

    .. math:: dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW,

    marginal std ``1 - exp(-B(t))`` (no square root), always below the VP std.
    ``discretize`` is Euler-Maruyama: there is no DDPM chain for sub-VP (``has_chain`` False).
    """

    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        B = self.integrated_beta(t)
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)


class OrnsteinUhlenbeckSDE(LinearSDE):
    r"""Ornstein-Uhlenbeck process with constant coefficients, ``dX = -beta X dt + sigma dW``.

    Mean ``e^{-beta t} x_0``, variance ``sigma^2 / (2 beta) (1 - e^{-2 beta t})``; the stationary
    law ``N(0, sigma^2 / (2 beta))`` is the prior. With ``sigma^2 = 2 beta`` it is the VP SDE with
    constant rate ``2 beta``. The default ``T = 5`` makes ``p_T`` within ``e^{-5}`` of stationary.
    """

    def __init__(self, beta: float = 1.0, sigma: float = math.sqrt(2.0), N: int = 1000,
                 T: float = 5.0):
        super().__init__(N, T)
        self.beta = check_positive("beta", beta)
        self.sigma = check_positive("sigma", sigma)

    def drift_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(t), -self.beta, dtype=jnp.result_type(float))

    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(t), self.sigma, dtype=jnp.result_type(float))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(t)
        var = self.sigma**2 / (2 * self.beta) * -jnp.expm1(-2 * self.beta * t)
        return jnp.exp(-self.beta * t), jnp.sqrt(var)

    @property
    def prior_std(self) -> float:
        return self.sigma / math.sqrt(2 * self.beta)
