r"""Time grids and the coefficients a sampler step reads at each grid point.

A fixed-step sampler with ``K = num_steps`` steps evaluates the score at ``K`` times
``t_0 = T > t_1 > ... > t_{K-1}`` and steps ``t_k -> t_{k+1}``, with ``t_K = 0``: the last step
lands on the data and returns its noiseless mean. Three kinds of grid:

* continuous (Euler-Maruyama, the ODE samplers, and DDPM ancestral / DDIM on SDEs without a DDPM
  chain): ``t_k`` from ``time_grid`` between ``T`` and ``eps``; ``alpha_t, sigma_t`` from the
  SDE's exact marginal.
* chain (DDPM ancestral and DDIM on an SDE with a DDPM chain: VP, cosine VP, ``DiscreteVPSDE``):
  the same grid with ``eps = T / N``, snapped to the chain's times ``t_i = (i + 1) T / N``; a
  strided sub-sequence ``i_0 = N - 1 > ... > i_{K-1} = 0`` of the chain (Song, Meng & Ermon 2021,
  Sec. 4.2; Nichol & Dhariwal 2021, Sec. 4). The coefficients are the SDE's marginal at those
  times, like everywhere else: for ``DiscreteVPSDE`` they are the chain's ``sqrt(alpha_bar_i)``
  and ``sqrt(1 - alpha_bar_i)`` (diffusers' and Ho et al.'s sampler); for the continuous
  ``VPSDE`` they are ``alpha(t_i)``, ``sigma(t_i)``, the same ones its ``score_fn`` was built with.
* discretization (reverse diffusion): the grid ``t_i = (i + 1) T / K`` of the SDE's own ``K``-step
  discretization (``sde.with_num_steps(K)``), as in score_sde.

Grid kinds (``time_grid``):

* ``"uniform"`` in ``t``; ``"quadratic"`` (``t`` quadratic in the step index, dense near ``eps``;
  Song, Meng & Ermon 2021, Appendix D.2); ``"karras"``: uniform in ``r^{1/rho}`` with ``rho = 7``
  where ``r = sigma_t / alpha_t`` (Karras et al. 2022, Eq. 5, through the noise-to-signal ratio
  of any linear SDE; ``karras_times`` for another ``rho``); ``"logsnr"``: uniform in
  ``lambda = log(alpha_t / sigma_t) = -log r`` (Lu et al. 2022). All four run from ``T`` to
  ``eps``.
* diffusers' timestep spacings, on the indices ``tau`` of the SDE's ``N``-step chain, at the
  times ``t = (tau + 1) T / N`` (``eps`` is not used), each in decreasing order. Those of
  ``DDPMScheduler`` and ``DDIMScheduler`` (``K`` indices down to ``tau = 0``): ``"leading"``
  ``tau = k (N // K)`` (their default, ``steps_offset = 0``), ``"trailing"`` ``tau = round(N -
  k N / K) - 1`` and ``"linspace"`` ``tau = round(linspace(0, N - 1, K))``. Those of
  ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler``, which take ``K + 1`` indices
  and drop the last (``tau = 0``): ``"linspace_multistep"`` (their default) the first ``K`` of
  ``round(linspace(N - 1, 0, K + 1))``, ``"leading_multistep"`` the first ``K`` of ``k (N //
  (K + 1))``, ``k = K, ..., 0``; their ``"trailing"`` is the one above.
* an explicit decreasing sequence of the ``K`` evaluation times in ``(0, T]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

INDEX_SPACINGS = ("leading", "trailing", "linspace", "leading_multistep", "linspace_multistep")
TIME_GRIDS = ("uniform", "quadratic", "karras", "logsnr") + INDEX_SPACINGS
KARRAS_RHO = 7.0


def _noise_to_signal(sde, t: np.ndarray) -> np.ndarray:
    alpha, sigma = sde.marginal_coeffs(jnp.asarray(t, jnp.result_type(float)))
    return np.asarray(sigma, np.float64) / np.asarray(alpha, np.float64)


def times_for_ratio(sde, ratio: np.ndarray, eps: float, t_max: float | None = None
                    ) -> np.ndarray:
    """The times in ``[eps, t_max]`` (default ``T``) at which the noise-to-signal ratio ``r(t) =
    sigma_t / alpha_t`` takes the values ``ratio`` (bisection, float64; ``r`` increases with
    ``t`` for every SDE of the family), clipped to the ends."""
    ratio = np.asarray(ratio, np.float64)
    hi_t = float(sde.T if t_max is None else t_max)
    lo, hi = np.full(ratio.shape, float(eps)), np.full(ratio.shape, hi_t)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        above = _noise_to_signal(sde, mid) > ratio
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def karras_times(sde, num_steps: int, eps: float, rho: float = KARRAS_RHO) -> np.ndarray:
    r"""Times ``T = t_0 > ... > t_{K-1} = eps`` whose noise-to-signal ratios ``r = sigma / alpha``
    are Karras et al. 2022's (Eq. 5): ``r_k = (r_max^{1/rho} + k / (K - 1) (r_min^{1/rho} -
    r_max^{1/rho}))^rho`` with ``r_max = r(T)``, ``r_min = r(eps)``."""
    if num_steps == 1:
        return np.array([sde.T], np.float64)
    lo_hi = _noise_to_signal(sde, np.array([eps, sde.T]))
    k = np.arange(num_steps) / (num_steps - 1)
    inv = 1.0 / rho
    target = (lo_hi[1] ** inv + k * (lo_hi[0] ** inv - lo_hi[1] ** inv)) ** rho
    t = times_for_ratio(sde, target, eps)
    t[0], t[-1] = sde.T, eps
    return t


def logsnr_times(sde, num_steps: int, eps: float) -> np.ndarray:
    r"""Times ``T = t_0 > ... > t_{K-1} = eps`` uniform in the log signal-to-noise ratio
    ``lambda = log(alpha_t / sigma_t)`` (Lu et al. 2022, Sec. 3.3: the step of the exponential
    integrators is ``h = lambda_{k+1} - lambda_k``)."""
    if num_steps == 1:
        return np.array([sde.T], np.float64)
    lam = -np.log(_noise_to_signal(sde, np.array([sde.T, eps])))
    target = np.exp(-np.linspace(lam[0], lam[1], num_steps))
    t = times_for_ratio(sde, target, eps)
    t[0], t[-1] = sde.T, eps
    return t


def chain_indices(kind: str, num_steps: int, N: int) -> np.ndarray:
    """diffusers' timestep spacings: ``K`` decreasing indices of an ``N``-step chain (the
    module docstring gives each; ``DPMSolverMultistepScheduler.set_timesteps`` with
    ``steps_offset = 0`` for the ``*_multistep`` ones).

    Raises:
      ValueError: ``num_steps > N`` (the indices would repeat; ``num_steps >= N`` for
        ``"leading_multistep"``, whose stride ``N // (K + 1)`` would be 0).
    """
    limit = N - 1 if kind == "leading_multistep" else N
    if num_steps > limit:
        bound = "N - 1" if kind == "leading_multistep" else "N"
        raise ValueError(f"time_grid={kind!r} needs num_steps <= {bound} = {limit} (the SDE's "
                         f"chain), got num_steps={num_steps}")
    if kind == "leading":
        tau = np.arange(num_steps) * (N // num_steps)
    elif kind == "trailing":
        tau = np.round(N - np.arange(num_steps) * (N / num_steps)).astype(np.int64)[::-1] - 1
    elif kind == "linspace":
        tau = np.round(np.linspace(0, N - 1, num_steps))
    elif kind == "leading_multistep":
        tau = (np.arange(num_steps + 1) * (N // (num_steps + 1)))[1:]
    else:
        tau = np.round(np.linspace(0, N - 1, num_steps + 1))[1:]
    return np.asarray(tau, np.int64)[::-1].copy()


def rounded_chain_times(sde, times: np.ndarray) -> np.ndarray:
    r"""The chain times ``(round(tau) + 1) T / N`` of ``times``, where ``tau`` is the chain index
    interpolated linearly in ``log r`` (``r = sigma / alpha``) between the chain's ``r_i =
    r((i + 1) T / N)`` and clipped to ``[0, N - 1]``: diffusers' ``_sigma_to_t`` rounded, the
    timestep its multistep schedulers hand the network on a Karras grid. Half-way values round
    to even (numpy's ``round``, as diffusers)."""
    N, T = sde.N, sde.T
    log_r_chain = np.log(_noise_to_signal(sde, np.arange(1, N + 1) * (T / N)))
    tau = np.interp(np.log(_noise_to_signal(sde, np.asarray(times, np.float64))), log_r_chain,
                    np.arange(N, dtype=np.float64))
    return (np.round(tau) + 1.0) * (T / N)


def evaluation_times(kind: str | Sequence[float], num_steps: int, sde,
                     eps: float) -> np.ndarray:
    """The ``K`` decreasing evaluation times (float64 numpy) of a ``time_grid`` on ``sde``.

    ``"uniform"``, ``"quadratic"``, ``"karras"`` and ``"logsnr"`` run from ``t_0 = T`` to
    ``t_{K-1} = eps``;
    the index spacings are at chain times ``(tau + 1) T / N``.

    Raises:
      ValueError: an unknown ``kind``, or an explicit grid that is not a strictly decreasing
        sequence of ``num_steps`` times in ``(0, T]``.
    """
    T = sde.T
    if isinstance(kind, str):
        if kind not in TIME_GRIDS:
            raise ValueError(f"time_grid must be one of {TIME_GRIDS} or a sequence of times, "
                             f"got {kind!r}")
        if kind in INDEX_SPACINGS:
            return (chain_indices(kind, num_steps, sde.N) + 1) * (T / sde.N)
        if kind == "karras":
            return karras_times(sde, num_steps, eps)
        if kind == "logsnr":
            return logsnr_times(sde, num_steps, eps)
        if num_steps == 1:
            return np.array([T])
        u = np.linspace(1.0, 0.0, num_steps)  # 1 at T, 0 at eps
        if kind == "quadratic":
            u = u**2
        return eps + (T - eps) * u
    t = np.asarray(kind, dtype=np.float64)
    if (t.shape != (num_steps,) or not np.all(np.isfinite(t)) or np.any(np.diff(t) >= 0)
            or t[-1] <= 0 or t[0] > T):
        raise ValueError(f"time_grid must be a strictly decreasing sequence of num_steps="
                         f"{num_steps} times in (0, T={T}], got {kind!r}")
    return t


class GridCoeffs(NamedTuple):
    """What a step reads at grid point ``k``: ``(K,)`` arrays in a grid, scalars in a step.

    ``t`` and ``t_next`` (``t_K = 0``), the marginal coefficients ``alpha, sigma`` at ``t`` and
    ``alpha_next, sigma_next`` at ``t_next`` (``1`` and ``0`` at ``t = 0``). Steps that need only
    the times may leave the rest ``None``; ``*_mid`` is the log-SNR midpoint of the step
    (DPM-Solver-2S), ``*_hat`` the raised noise level of EDM's stochastic sampler, ``order``
    the order of a multistep method's step (lowered at the ends of the grid), and ``t_net``,
    ``sigma_net`` the chain time (and its ``sigma``) at which a multistep method with
    ``timestep_rounding`` evaluates the score (``rounded_chain_times``).
    """

    t: jax.Array
    t_next: jax.Array | None = None
    alpha: jax.Array | None = None
    alpha_next: jax.Array | None = None
    sigma: jax.Array | None = None
    sigma_next: jax.Array | None = None
    t_mid: jax.Array | None = None
    alpha_mid: jax.Array | None = None
    sigma_mid: jax.Array | None = None
    t_hat: jax.Array | None = None
    alpha_hat: jax.Array | None = None
    sigma_hat: jax.Array | None = None
    order: jax.Array | None = None
    t_net: jax.Array | None = None
    sigma_net: jax.Array | None = None


def _pack(t, alpha, sigma) -> GridCoeffs:
    """Per-step coefficients ``(K,)``: the time ``t_k`` and the next ``t_{k+1}`` (``t_K = 0``)."""
    zero_one = (jnp.zeros((1,), t.dtype), jnp.ones((1,), t.dtype))
    t_all = jnp.concatenate([t, zero_one[0]])
    alpha_all = jnp.concatenate([alpha, zero_one[1]])
    sigma_all = jnp.concatenate([sigma, zero_one[0]])
    return GridCoeffs(t=t_all[:-1], t_next=t_all[1:], alpha=alpha_all[:-1],
                      alpha_next=alpha_all[1:], sigma=sigma_all[:-1], sigma_next=sigma_all[1:])


def continuous_grid(sde, times: np.ndarray) -> GridCoeffs:
    """Coefficients from the SDE's exact marginal ``(alpha_t, sigma_t)`` at ``times``."""
    t = jnp.asarray(times, dtype=jnp.result_type(float))
    alpha, sigma = sde.marginal_coeffs(t)
    return _pack(t, alpha, sigma)


def chain_grid(sde, times: np.ndarray) -> GridCoeffs:
    """Coefficients at the chain times ``t_i = (i + 1) T / N`` nearest ``times``: a strided
    sub-sequence of the chain, read from the SDE's own marginal (for ``DiscreteVPSDE``, exactly
    ``sqrt(alpha_bar_i)``, ``sqrt(1 - alpha_bar_i)``).

    Raises:
      ValueError: two times snap to the same chain index (too many steps for the chain).
    """
    return continuous_grid(sde, (chain_index(sde, times) + 1) * (sde.T / sde.N))


def chain_index(sde, times: np.ndarray) -> np.ndarray:
    """The chain indices ``i`` (decreasing) whose times ``(i + 1) T / N`` are nearest ``times``.

    Raises:
      ValueError: two times snap to the same chain index (too many steps for the chain).
    """
    N, T = sde.N, sde.T
    index = np.clip(np.round(np.asarray(times) * N / T).astype(np.int64) - 1, 0, N - 1)
    if np.any(np.diff(index) >= 0):
        raise ValueError(f"num_steps={len(index)} with this time_grid does not give distinct "
                         f"steps of the sde's DDPM chain of N={N} steps; use fewer steps")
    return index


def discretization_grid(sde, num_steps: int) -> GridCoeffs:
    """The grid ``t_i = (i + 1) T / K``, ``i = K - 1, ..., 0`` of the ``K``-step discretization."""
    times = np.arange(num_steps, 0, -1) * sde.T / num_steps
    return continuous_grid(sde, times)
