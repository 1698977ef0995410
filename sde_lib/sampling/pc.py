r"""``pc``: predictor-corrector sampling (Song et al. 2021, Algorithm 1) with the Langevin
corrector (Algorithm 5). Options (defaults first): ``snr=0.16``, ``corrector_steps=1``,
``predictor="reverse_diffusion" | "euler_maruyama" | "none"`` (reverse diffusion runs on the
SDE's ``num_steps``-step discretization, as in score_sde), ``time_grid="uniform"``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sde_lib._arrays import sum_except_batch
from sde_lib._validation import check_choice, check_num_steps, check_positive
from sde_lib.sampling.registry import (
    Sampler,
    check_grid,
    continuous_coefficients,
    register,
    step_noise,
    step_times,
)
from sde_lib.sampling.reverse_sde import (
    discretization_coefficients,
    euler_maruyama,
    reverse_diffusion,
)

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")


def langevin_corrector(key, x, c, *, score_fn, snr, num_steps):
    r"""``num_steps`` Langevin MCMC steps targeting ``p_t`` (Song et al. 2021, Algorithm 5):
    ``x_mean = x + e s``, ``x = x_mean + sqrt(2 e) z`` with step ``e = 2 a (snr ||z|| / ||s||)^2``,
    ``a = (alpha_t / alpha_{t_next})^2``, the squared mean coefficient of the step: ``1 - beta_i``
    between consecutive times of a DDPM chain (``DiscreteVPSDE``; score_sde's ``alphas[i]``),
    ``exp(-(B(t) - B(t_next)))`` on a continuous VP grid, ``1`` for VE. As in score_sde,
    ``||z||`` and ``||s||`` are per-example norms averaged over the batch: a per-example ratio
    explodes where ``s`` vanishes (at the modes), most of all in low dimension.
    """
    a = (c.alpha / c.alpha_next) ** 2
    t = step_times(x, c.t)

    def body(carry, key):
        x, _ = carry
        s = score_fn(x, t)
        z = step_noise(key, x)
        ratio = (jnp.mean(jnp.sqrt(sum_except_batch(z**2)))
                 / jnp.mean(jnp.sqrt(sum_except_batch(s**2))))
        e = 2.0 * a * (snr * ratio) ** 2
        x_mean = x + e * s
        return (x_mean + jnp.sqrt(2.0 * e) * z, x_mean), None

    (x, x_mean), _ = lax.scan(body, (x, x), jax.random.split(key, num_steps))
    return x, x_mean


def predictor_corrector(key, x, c, *, corrector, predictor):
    """Corrector steps at ``t``, then one predictor step to ``t_next`` (Song et al. 2021,
    Algorithm 1). Without a predictor the corrector's mean is the last step's mean."""
    key_c, key_p = jax.random.split(key)
    x, x_mean = corrector(key_c, x, c)
    if predictor is None:
        return x, x_mean
    return predictor(key_p, x, c)


def _pc_grid(sde, num_steps, eps, o):
    if o["predictor"] != "reverse_diffusion":
        return continuous_coefficients(sde, num_steps, eps, o)
    return discretization_coefficients(sde, num_steps, eps, o)  # time_grid: Sampler.coefficients


def _pc_step(sde, score_fn, o):
    predictor = o["predictor"]
    predict = (None if predictor == "none" else functools.partial(
        reverse_diffusion if predictor == "reverse_diffusion" else euler_maruyama,
        sde=sde, score_fn=score_fn))
    correct = functools.partial(langevin_corrector, score_fn=score_fn, snr=o["snr"],
                                num_steps=o["corrector_steps"])
    return functools.partial(predictor_corrector, corrector=correct, predictor=predict)


def _pc_nfe(num_steps, o):
    return num_steps * (o["corrector_steps"] + (o["predictor"] != "none"))


register(Sampler("pc", {
    "snr": (0.16, check_positive), "corrector_steps": (1, check_num_steps),
    "predictor": ("reverse_diffusion", functools.partial(check_choice, choices=PREDICTORS)),
    "time_grid": ("uniform", check_grid)}, _pc_grid, _pc_step, nfe=_pc_nfe, affine=False,
    discretized=lambda o: o["predictor"] == "reverse_diffusion"))
