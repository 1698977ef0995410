r"""What the exponential integrators in log-SNR share (``dpm_solver.py``, ``unipc.py``, and
``edm.py``'s data prediction): the ``Multistep`` step that carries earlier model outputs, the
per-step order of their grid, Tweedie's data prediction and the first-order step.

Notation: ``lambda_t = log(alpha_t / sigma_t)``, ``h = lambda_{t_next} - lambda_t > 0``, and the
data prediction (Tweedie) ``D(x, t) = (x + sigma_t^2 s(x, t)) / alpha_t``. The exact solution of
the probability-flow ODE in these variables is ``x_s = (sigma_s / sigma_t) x_t + sigma_s
int_{lambda_t}^{lambda_s} e^{lambda} D(x_lambda) d lambda`` (Lu et al. 2022b, Eq. 9); the
multistep methods interpolate ``D`` through earlier evaluations, carried in the scan's state.
``e^{-h} = (sigma_s alpha_t) / (sigma_t alpha_s)`` is computed from the coefficients, so the
last step, to ``sigma = 0`` (``h = infinity``), is ``x_0 = D(x, t)`` exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sde_lib.sampling import grid
from sde_lib.sampling.registry import continuous_coefficients, step_times


class Multistep(NamedTuple):
    """A step that carries a state beyond ``x`` (earlier model outputs): ``init(x_T) -> state``
    with ``state[0] = x``, and ``step(key, state, c) -> (state, x_mean)``; ``scan_steps`` runs
    it like a plain step."""

    init: Callable
    step: Callable


def denoise(score_fn, x, t, alpha, sigma):
    """Tweedie's data prediction ``D = (x + sigma^2 s(x, t)) / alpha``."""
    return (x + sigma**2 * score_fn(x, step_times(x, t))) / alpha


def denoise_grid(score_fn, x, c):
    r"""``D(x, t)`` at grid point ``c``: ``denoise`` at ``c.t``, or with ``timestep_rounding``
    (``c.t_net`` set) the network's noise prediction read at the rounded chain time,
    ``eps = -sigma(t_net) s(x, t_net)``, in ``D = (x - sigma_t eps) / alpha_t`` at the grid's own
    ``(alpha_t, sigma_t)`` (diffusers' multistep schedulers on a Karras grid)."""
    if c.t_net is None:
        return denoise(score_fn, x, c.t, c.alpha, c.sigma)
    return (x + c.sigma * c.sigma_net * score_fn(x, step_times(x, c.t_net))) / c.alpha


def log_snr(alpha, sigma):
    """``lambda = log(alpha / sigma)``."""
    return jnp.log(alpha) - jnp.log(sigma)


def safe(v):
    """``v`` where it is finite and non-zero, 1 elsewhere (for the branches not selected)."""
    return jnp.where(jnp.isfinite(v) & (v != 0), v, 1.0)


def exp_step(c, x, m0):
    """The first-order step (DPM-Solver-1 = DDIM, eta = 0): ``(sigma_s / sigma_t) x - alpha_s
    (e^{-h} - 1) m0``, with ``e^{-h} - 1`` and a safe ``h`` for the higher orders."""
    ratio = c.sigma_next / c.sigma
    phi1 = ratio * c.alpha / c.alpha_next - 1.0  # e^{-h} - 1, -1 at sigma_next = 0
    h = safe(log_snr(c.alpha_next, c.sigma_next) - log_snr(c.alpha, c.sigma))
    return ratio * x - c.alpha_next * phi1 * m0, phi1, h


def noise_to_signal(alpha, sigma):
    """``r = sigma / alpha`` on the host, in float64 (the grids' noise levels)."""
    return np.asarray(sigma, np.float64) / np.asarray(alpha, np.float64)


FINAL_SIGMAS = ("zero", "sigma_min")
LOWER_ORDER_FINAL = (True, False, "always")


def check_final_sigma(name, value):
    """``"zero"`` (the last step lands on ``sigma = 0``) or ``"sigma_min"`` (on ``t = T / N``)."""
    if value not in FINAL_SIGMAS:
        raise ValueError(f"{name} must be one of {FINAL_SIGMAS}, got {value!r}")
    return value


def check_lower_order_final(name, value):
    """``True`` (diffusers' rule, K < 15), ``False`` or ``"always"``."""
    if not any(value is v or (isinstance(v, str) and value == v) for v in LOWER_ORDER_FINAL):
        raise ValueError(f"{name} must be True, False or 'always', got {value!r}")
    return value


def check_flag(name, value):
    """``True`` or ``False``."""
    if value is not True and value is not False:
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def step_orders(max_order, num_steps, lower_order_final="always", final_sigma="zero"):
    r"""Each step's order: ``min(order, k + 1)`` (a warm-up: step ``k`` has ``k`` earlier
    outputs), lowered at the end by ``lower_order_final``:

    * ``True`` (diffusers' ``lower_order_final=True``, ``DPMSolverMultistepScheduler``'s
      default): when ``K < 15``, the last step at order 1 and the one before at most 2;
    * ``False``: no lowering;
    * ``"always"``: ``min(order, K - k)`` at every ``K`` (diffusers' ``UniPCMultistepScheduler``
      rule).

    Whatever the rule, a last step to ``sigma = 0`` (``final_sigma="zero"``) is first order,
    ``x_0 = D(x, t)``: a higher order there extrapolates ``D`` to ``h = infinity``."""
    k = np.arange(num_steps)
    order = np.minimum(max_order, k + 1)
    if lower_order_final == "always" or (lower_order_final is True and num_steps < 15):
        order = np.minimum(order, num_steps - k)
    if final_sigma == "zero":
        order[-1] = 1
    return order


def multistep_grid(max_order):
    """The grid builder of a multistep method: the continuous grid with each step's order
    (``step_orders``; ``order`` the option, ``max_order`` without one). With ``final_sigma=
    "sigma_min"`` the last step goes to ``t = T / N`` (the first time of the SDE's ``N``-step
    chain, diffusers' ``final_sigmas_type="sigma_min"``) instead of ``t = 0``, and returns the
    sample there; a step of length 0 (a grid ending at ``T / N``) is first order, the identity.
    With ``timestep_rounding=True`` the score is read at the rounded chain times
    (``grid.rounded_chain_times``, ``denoise_grid``) while the steps keep the grid's
    coefficients.

    Raises:
      ValueError: ``final_sigma="sigma_min"`` on a grid whose last time is below ``T / N``.
    """
    def build(sde, num_steps, eps, o):
        coeffs = continuous_coefficients(sde, num_steps, eps, o)
        final_sigma = o.get("final_sigma", "zero")
        order = step_orders(o.get("order", max_order), num_steps,
                            o.get("lower_order_final", "always"), final_sigma)
        if final_sigma == "sigma_min":
            t_min = sde.T / sde.N
            t_last = float(coeffs.t[-1])
            if t_last < t_min * (1.0 - 1e-9):
                raise ValueError(f"final_sigma='sigma_min' steps to t = T / N = {t_min:g}; the "
                                 f"grid's last time {t_last:g} is below it (raise eps to T / N)")
            if t_last <= t_min:  # a step of length 0
                t_end, alpha_end, sigma_end = coeffs.t[-1], coeffs.alpha[-1], coeffs.sigma[-1]
                order[-1] = 1
            else:
                t_end = jnp.asarray(t_min, coeffs.t.dtype)
                alpha_end, sigma_end = sde.marginal_coeffs(t_end)
            last = lambda a, v: a.at[-1].set(v)  # noqa: E731
            coeffs = coeffs._replace(t_next=last(coeffs.t_next, t_end),
                                     alpha_next=last(coeffs.alpha_next, alpha_end),
                                     sigma_next=last(coeffs.sigma_next, sigma_end))
        coeffs = coeffs._replace(order=jnp.asarray(order, coeffs.t.dtype))
        if o.get("timestep_rounding", False):
            t_net = jnp.asarray(grid.rounded_chain_times(sde, np.asarray(coeffs.t, np.float64)),
                                coeffs.t.dtype)
            coeffs = coeffs._replace(t_net=t_net, sigma_net=sde.marginal_coeffs(t_net)[1])
        return coeffs
    return build


def multistep_step(step_fn, init):
    """The step builder of a multistep method: ``Multistep(init, step_fn)`` with the score
    bound."""
    return lambda sde, score_fn, o: Multistep(init, functools.partial(step_fn, score_fn=score_fn))
