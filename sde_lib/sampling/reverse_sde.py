r"""The reverse SDE (Anderson 1982; Song et al. 2021, Eq. 6), stepped two ways:
``euler_maruyama`` on a time grid (option ``time_grid="uniform"``) and ``reverse_diffusion``
(no options) on the SDE's ``num_steps``-step discretization ``sde.with_num_steps(num_steps)``
and its grid ``t_i = (i + 1) T / K``, as score_sde."""

from __future__ import annotations

import jax.numpy as jnp

from sde_lib._arrays import batch_coeff
from sde_lib.sampling import grid
from sde_lib.sampling.registry import (
    Sampler,
    bind_sde_step,
    check_grid,
    continuous_coefficients,
    register,
    step_noise,
    step_times,
)


def euler_maruyama(key, x, c, *, sde, score_fn):
    r"""Euler-Maruyama on the reverse SDE: ``x_mean = x - (f - g^2 s) h``, ``x = x_mean + g
    \sqrt{h} z`` (Song et al. 2021, Eq. 6; Kloeden & Platen 1992, weak order 1)."""
    h = c.t - c.t_next
    drift, g = sde.reverse(score_fn).sde(x, step_times(x, c.t))
    x_mean = x - drift * h
    return x_mean + batch_coeff(g, x) * jnp.sqrt(h) * step_noise(key, x), x_mean


def reverse_diffusion(key, x, c, *, sde, score_fn):
    r"""Reverse of the forward discretization ``x_{i+1} = x_i + f + G z`` of ``sde`` (the SDE with
    ``K`` steps): ``x_mean = x - f + G^2 s``, ``x = x_mean + G z`` (Song et al. 2021, Eq. 46)."""
    rev_f, rev_G = sde.reverse(score_fn).discretize(x, step_times(x, c.t))
    x_mean = x - rev_f
    return x_mean + batch_coeff(rev_G, x) * step_noise(key, x), x_mean


def discretization_coefficients(sde_k, num_steps, eps, options):
    """The grid ``t_i = (i + 1) T / K`` of the SDE's ``K``-step discretization (``eps`` unused)."""
    return grid.discretization_grid(sde_k, num_steps)


register(Sampler("euler_maruyama", {"time_grid": ("uniform", check_grid)},
                 continuous_coefficients, bind_sde_step(euler_maruyama)))
register(Sampler("reverse_diffusion", {}, discretization_coefficients,
                 bind_sde_step(reverse_diffusion), discretized=lambda o: True))
