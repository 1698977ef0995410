r"""The probability-flow ODE ``dx/dt = f(x, t) - g(t)^2 s(x, t) / 2`` (Song et al. 2021, Eq. 13)
with fixed steps: ``pf_ode_euler`` (order 1) and ``pf_ode_heun`` (order 2); option
``time_grid="uniform"``."""

from __future__ import annotations

from jax import lax

from sde_lib.sampling.registry import (
    Sampler,
    bind_sde_step,
    check_grid,
    continuous_coefficients,
    heun_nfe,
    register,
    step_times,
)


def pf_ode_euler(key, x, c, *, sde, score_fn):
    """Euler step of the probability-flow ODE (Song et al. 2021, Eq. 13): ``x - drift h``."""
    del key
    h = c.t - c.t_next
    drift, _ = sde.reverse(score_fn, probability_flow=True).sde(x, step_times(x, c.t))
    x_next = x - drift * h
    return x_next, x_next


def pf_ode_heun(key, x, c, *, sde, score_fn):
    r"""Heun's method (explicit trapezoidal rule, order 2) on the probability-flow ODE:
    ``\tilde x = x - d(x, t) h``, ``x_next = x - (d(x, t) + d(\tilde x, t_next)) h / 2``
    (Karras et al. 2022, Algorithm 1). The last step, to ``t_next = 0`` where the score is
    singular, is an Euler step."""
    del key
    h = c.t - c.t_next
    flow = sde.reverse(score_fn, probability_flow=True)
    d = flow.sde(x, step_times(x, c.t))[0]
    x_euler = x - d * h

    def correct(x_euler):
        d_next = flow.sde(x_euler, step_times(x, c.t_next))[0]
        return x - 0.5 * (d + d_next) * h

    x_next = lax.cond(c.t_next > 0, correct, lambda y: y, x_euler)
    return x_next, x_next


register(Sampler("pf_ode_euler", {"time_grid": ("uniform", check_grid)},
                 continuous_coefficients, bind_sde_step(pf_ode_euler),
                 deterministic=lambda o: True))
register(Sampler("pf_ode_heun", {"time_grid": ("uniform", check_grid)},
                 continuous_coefficients, bind_sde_step(pf_ode_heun), nfe=heun_nfe,
                 deterministic=lambda o: True))
