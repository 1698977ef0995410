r"""Time grids and the coefficients a sampler step reads at each grid point.

A fixed-step sampler with ``K = num_steps`` steps evaluates the score at ``K`` times
``t_0 = T > t_1 > ... > t_{K-1}`` and steps ``t_k -> t_{k+1}``, with ``t_K = 0``: the last step
lands on the data and returns its noiseless mean. Three kinds of grid:

* continuous (Euler-Maruyama, the ODE samplers, and DDPM ancestral / DDIM on SDEs without a DDPM
  chain): ``t_k`` from ``time_grid`` between ``T`` and ``eps``; ``alpha_t, sigma_t`` from the
  SDE's exact marginal.
* chain (DDPM ancestral and DDIM on an SDE with a DDPM chain, VP and cosine VP): the same grid
  with ``eps = T / N``, snapped to the chain's times ``t_i = (i + 1) T / N``; a strided
  sub-sequence ``i_0 = N - 1 > ... > i_{K-1} = 0`` of the chain (Song, Meng & Ermon 2021, Sec. 4.2;
  Nichol & Dhariwal 2021, Sec. 4), with ``alpha = sqrt(alpha_bar_i)``,
  ``sigma = sqrt(1 - alpha_bar_i)``.
* discretization (reverse diffusion): the grid ``t_i = (i + 1) T / K`` of the SDE's own ``K``-step
  discretization (``sde.with_num_steps(K)``), as in score_sde.

Grid kinds (``time_grid``): ``"uniform"``, ``"quadratic"`` (``t`` quadratic in the step index,
dense near ``eps``; Song, Meng & Ermon 2021, Appendix D.2), or an explicit decreasing sequence of
the ``K`` evaluation times in ``(0, T]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from sde_lib.ddpm import DDPMChain

TIME_GRIDS = ("uniform", "quadratic")


def has_chain(sde) -> bool:
    """Whether ``sde`` has a DDPM chain (``discrete_betas``): VP and cosine VP."""
    try:
        sde.discrete_betas  # noqa: B018 -- sub-VP raises AttributeError here
    except AttributeError:
        return False
    return True


def evaluation_times(kind: str | Sequence[float], num_steps: int, T: float,
                     eps: float) -> np.ndarray:
    """The ``K`` decreasing evaluation times ``t_0 = T, ..., t_{K-1} = eps`` (float64 numpy).

    Raises:
      ValueError: an unknown ``kind``, or an explicit grid that is not a strictly decreasing
        sequence of ``num_steps`` times in ``(0, T]``.
    """
    if isinstance(kind, str):
        if kind not in TIME_GRIDS:
            raise ValueError(f"time_grid must be one of {TIME_GRIDS} or a sequence of times, "
                             f"got {kind!r}")
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


def _pack(t, alpha, sigma) -> dict[str, jnp.ndarray]:
    """Per-step coefficients ``(K,)``: the time ``t_k`` and the next ``t_{k+1}`` (``t_K = 0``)."""
    zero_one = (jnp.zeros((1,), t.dtype), jnp.ones((1,), t.dtype))
    t_all = jnp.concatenate([t, zero_one[0]])
    alpha_all = jnp.concatenate([alpha, zero_one[1]])
    sigma_all = jnp.concatenate([sigma, zero_one[0]])
    return {"t": t_all[:-1], "t_next": t_all[1:], "alpha": alpha_all[:-1],
            "alpha_next": alpha_all[1:], "sigma": sigma_all[:-1], "sigma_next": sigma_all[1:]}


def continuous_grid(sde, times: np.ndarray) -> dict[str, jnp.ndarray]:
    """Coefficients from the SDE's exact marginal ``(alpha_t, sigma_t)`` at ``times``."""
    t = jnp.asarray(times, dtype=jnp.result_type(float))
    alpha, sigma = sde.marginal_coeffs(t)
    return _pack(t, alpha, sigma)


def chain_grid(sde, times: np.ndarray) -> dict[str, jnp.ndarray]:
    """Coefficients of the DDPM chain of ``sde`` at the chain times nearest ``times``.

    Raises:
      ValueError: two times snap to the same chain index (too many steps for the chain).
    """
    N, T = sde.N, sde.T
    index = np.clip(np.round(times * N / T).astype(np.int64) - 1, 0, N - 1)
    if np.any(np.diff(index) >= 0):
        raise ValueError(f"num_steps={len(times)} with this time_grid does not give distinct "
                         f"steps of the sde's DDPM chain of N={N} steps; use fewer steps")
    alpha_bar = DDPMChain.from_sde(sde).alphas_cumprod[jnp.asarray(index)]
    t = jnp.asarray((index + 1) * T / N, dtype=alpha_bar.dtype)
    return _pack(t, jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar))


def discretization_grid(sde, num_steps: int) -> dict[str, jnp.ndarray]:
    """The grid ``t_i = (i + 1) T / K``, ``i = K - 1, ..., 0`` of the ``K``-step discretization."""
    times = np.arange(num_steps, 0, -1) * sde.T / num_steps
    return continuous_grid(sde, times)
