r"""``pf_ode_adaptive``: the probability-flow ODE (Song et al. 2021, Eq. 13) solved from ``T`` to
``eps`` by diffrax with PID step-size control, then the same last Euler step to ``t = 0`` as
``pf_ode_euler``; ``num_steps`` is not used. Options (defaults first): ``rtol=1e-5``,
``atol=1e-5``, ``solver="tsit5" | "dopri5" | "bosh3" | "heun"``, ``max_steps=4096``.
``ODE_SOLVERS`` is also the likelihood's table of solvers."""

from __future__ import annotations

import functools

import diffrax
import jax.numpy as jnp

from sde_lib._validation import check_choice, check_num_steps, check_positive
from sde_lib.sampling import grid
from sde_lib.sampling.ode import pf_ode_euler
from sde_lib.sampling.registry import Sampler, register

# diffrax solvers: (class, new evaluations of the vector field per step, extra evaluations of the
# first step). The FSAL pairs reuse the last stage as the next first one, so their first step
# evaluates one more; Heun and Euler do not. Euler has no error estimate: fixed steps only (the
# likelihood's); the adaptive sampler takes the others.
ODE_SOLVERS = {"tsit5": (diffrax.Tsit5, 6, 1), "dopri5": (diffrax.Dopri5, 6, 1),
               "bosh3": (diffrax.Bosh3, 3, 1), "heun": (diffrax.Heun, 2, 0),
               "euler": (diffrax.Euler, 1, 0)}
ADAPTIVE_ODE_SOLVERS = ("tsit5", "dopri5", "bosh3", "heun")


def solve_pf_ode(x_T, sde, score_fn, eps, *, rtol, atol, solver, max_steps):
    """Probability-flow ODE from ``T`` to ``eps`` with diffrax (PID step-size control), then an
    Euler step to 0. NFE: the solver's new stages per step times its steps (accepted and
    rejected), plus the first step's first stage and the final Euler step."""
    flow = sde.reverse(score_fn, probability_flow=True)
    B = x_T.shape[0]

    def vector_field(t, x, args):
        return flow.sde(x, jnp.full((B,), t, x.dtype))[0].astype(x.dtype)

    solver_cls, stages, first_stage = ODE_SOLVERS[solver]
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver_cls(), t0=jnp.asarray(sde.T, x_T.dtype),
        t1=jnp.asarray(eps, x_T.dtype), dt0=-0.01 * (sde.T - eps), y0=x_T,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps)
    x_eps = sol.ys[-1]
    last = grid.GridCoeffs(t=jnp.asarray(eps, x_T.dtype), t_next=jnp.zeros((), x_T.dtype))
    x0, _ = pf_ode_euler(None, x_eps, last, sde=sde, score_fn=score_fn)
    return x0, stages * sol.stats["num_steps"] + first_stage + 1


register(Sampler("pf_ode_adaptive", {
    "rtol": (1e-5, check_positive), "atol": (1e-5, check_positive),
    "solver": ("tsit5", functools.partial(check_choice, choices=ADAPTIVE_ODE_SOLVERS)),
    "max_steps": (4096, check_num_steps)},
    solve=lambda x_T, sde, score_fn, eps, o: solve_pf_ode(x_T, sde, score_fn, eps, **o)))
