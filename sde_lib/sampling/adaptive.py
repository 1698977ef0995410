r"""``pf_ode_adaptive``: the probability-flow ODE (Song et al. 2021, Eq. 13) solved from ``T`` to
``eps`` by diffrax with PID step-size control, then the same last Euler step to ``t = 0`` as
``pf_ode_euler``; ``num_steps`` is not used. Options (defaults first): ``rtol=1e-5``,
``atol=1e-5``, ``solver="tsit5" | "dopri5" | "bosh3" | "heun"``, ``max_steps=4096``.
``ODE_SOLVERS`` is also the likelihood's table of solvers."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jax.experimental import checkify

from sde_lib._validation import (
    check_choice,
    check_finite,
    check_num_steps,
    check_positive,
    concrete_or_none,
    debugging,
)
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


class Stop(NamedTuple):
    """Where an adaptive solve ended: diffrax's ``result``, the time ``t`` and the state ``y``
    there (``t1`` and the solution when it succeeded; the last accepted step when it failed)."""

    result: diffrax.RESULTS
    t: jax.Array
    y: Any


def adaptive_solve(field, t0, t1, y0, *, rtol, atol, solver, max_steps) -> tuple[Stop, jax.Array]:
    """``dy/dt = field(t, y)`` from ``t0`` to ``t1`` by diffrax with PID step-size control, the
    first step 1% of the interval, in the dtype of ``y0``. Does not raise: ``check_stop`` reads
    the ``Stop``. NFE: the solver's new stages per step times its steps (accepted and
    rejected), plus the first step's first stage."""
    dtype = jax.tree.leaves(y0)[0].dtype
    solver_cls, stages, first_stage = ODE_SOLVERS[solver]
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: field(t, y)), solver_cls(),
        t0=jnp.asarray(t0, dtype), t1=jnp.asarray(t1, dtype), dt0=0.01 * (t1 - t0), y0=y0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        throw=False)
    stop = Stop(sol.result, sol.ts[-1], jax.tree.map(lambda a: a[-1], sol.ys))
    return stop, stages * sol.stats["num_steps"] + first_stage


def check_stop(stop: Stop, field, max_steps: int, out):
    """``out``, or an error if the solve of ``field`` stopped before ``t1``.

    Concrete: ValueError naming ``score_fn`` if ``field`` (the score and what is derived from
    it) is NaN or inf where the solve stopped (it rejects every step there until
    ``max_steps``), else naming ``max_steps``. Traced: diffrax's runtime error on ``out`` (as
    its ``throw=True``), or within ``debug_checks()`` a ``checkify`` check naming both.
    """
    ok = stop.result == diffrax.RESULTS.successful
    if concrete_or_none(ok) is None:
        if debugging():
            checkify.check(ok, f"the adaptive solve stopped before its end time: score_fn "
                               f"returned NaN or inf, or max_steps={max_steps} is too small")
            return out
        return stop.result.error_if(out, jnp.logical_not(ok))
    if not bool(ok):
        t = float(stop.t)
        check_finite("score_fn(x, t)", field(stop.t, stop.y),
                     f" at t={t:.6g}, where the adaptive solve stopped")
        raise ValueError(f"max_steps={max_steps} is too small: the adaptive solve stopped at "
                         f"t={t:.6g} ({diffrax.RESULTS[stop.result]}); raise max_steps or "
                         f"rtol, atol")
    return out


def solve_pf_ode(x_T, sde, score_fn, eps, *, rtol, atol, solver, max_steps):
    """Probability-flow ODE from ``T`` to ``eps`` with diffrax (PID step-size control), then an
    Euler step to 0. NFE: ``adaptive_solve``'s and the final Euler step."""
    flow = sde.reverse(score_fn, probability_flow=True)
    B = x_T.shape[0]

    def field(t, x):
        return flow.sde(x, jnp.full((B,), t, x.dtype))[0].astype(x.dtype)

    stop, nfe = adaptive_solve(field, sde.T, eps, x_T, rtol=rtol, atol=atol, solver=solver,
                               max_steps=max_steps)
    x_eps = check_stop(stop, field, max_steps, stop.y)
    last = grid.GridCoeffs(t=jnp.asarray(eps, x_T.dtype), t_next=jnp.zeros((), x_T.dtype))
    x0, _ = pf_ode_euler(None, x_eps, last, sde=sde, score_fn=score_fn)
    return x0, nfe + 1


register(Sampler("pf_ode_adaptive", {
    "rtol": (1e-5, check_positive), "atol": (1e-5, check_positive),
    "solver": ("tsit5", functools.partial(check_choice, choices=ADAPTIVE_ODE_SOLVERS)),
    "max_steps": (4096, check_num_steps)},
    solve=lambda x_T, sde, score_fn, eps, o: solve_pf_ode(x_T, sde, score_fn, eps, **o)))
