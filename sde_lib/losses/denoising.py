r"""Denoising losses: DSM on any linear SDE and the DDPM epsilon / x0 losses.

All take a plain ``model_fn(x, t) -> (B, *D)`` (the network output), a ``Parameterization``
(``sde_lib.get_parameterization``) saying what it predicts, the data ``x0`` ``(B, *D)``, the noise
``z`` ``(B, *D)`` and the time, and return per-example values ``(B,)`` summed over data axes.
The perturbed input is ``x_t = alpha x0 + sigma z``. Time sampling, the weighting function and the
reduction over the batch are the caller's (``sde_lib.losses.get_loss_fn`` composes them).

Identities used and tested: with ``eps_theta = -sigma s_theta`` and the score of the transition
``grad log p_{0t}(x_t | x_0) = -z / sigma``,

.. math:: \|s_\theta - \nabla\log p_{0t}\|^2 = \|\epsilon_\theta - z\|^2 / \sigma^2,
          \qquad \|x_{0,\theta} - x_0\|^2 = \sigma^2/\alpha^2\, \|\epsilon_\theta - z\|^2 .
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff, sum_except_batch
from sde_lib.losses.weighting import ddpm_unit_weight, sigma2_weighting, unit_weighting
from sde_lib.parameterization import Parameterization

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
Weighting = Callable[[object, jax.Array], jax.Array]

# What a denoising loss regresses onto: (prediction from the network output, reference value).
_TARGETS = {
    "eps": (lambda p, out, x_t, a, s: p.to_eps(out, x_t, a, s), lambda x0, z, a, s: z),
    "x0": (lambda p, out, x_t, a, s: p.to_x0(out, x_t, a, s), lambda x0, z, a, s: x0),
}
TARGETS = tuple(_TARGETS)


def check_batch(x0: ArrayLike, z: ArrayLike | None = None, t: ArrayLike | None = None) -> None:
    """Raises ValueError unless ``x0`` is ``(B, *D)`` with ``D`` non-empty, ``z`` (if given) has
    the shape of ``x0`` and ``t`` (if given) is ``(B,)``."""
    shape = jnp.shape(x0)
    if len(shape) < 2:
        raise ValueError(f"x0 must have shape (B, *D) with at least one data axis, got {shape}")
    if z is not None and jnp.shape(z) != shape:
        raise ValueError(f"z must have the shape of x0 {shape}, got {jnp.shape(z)}")
    if t is not None and jnp.shape(t) != shape[:1]:
        raise ValueError(f"t must have shape (B,) = {shape[:1]}, got {jnp.shape(t)}")


def call_model(model_fn: ModelFn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``model_fn(x, t)``, raising ValueError if its output is not shaped like ``x``."""
    out = model_fn(x, t)
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(f"model_fn output must have the shape of x {jnp.shape(x)}, got "
                         f"{jnp.shape(out)}")
    return out


def squared_error(pred: ArrayLike, target: ArrayLike) -> jax.Array:
    """``||pred - target||^2`` summed over data axes: ``(B,)``."""
    return sum_except_batch((jnp.asarray(pred) - jnp.asarray(target)) ** 2)


def perturb(x0: ArrayLike, z: ArrayLike, alpha: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """``x_t = alpha x0 + sigma z``, ``alpha, sigma`` ``(B,)``: a draw of ``p_{0t}(x_t | x0)``."""
    x0 = jnp.asarray(x0)
    return batch_coeff(alpha, x0) * x0 + batch_coeff(sigma, x0) * z


def denoising_error(model_fn: ModelFn, x0: ArrayLike, z: ArrayLike, t: ArrayLike,
                    alpha: ArrayLike, sigma: ArrayLike, parameterization: Parameterization,
                    target: str = "eps") -> jax.Array:
    r"""Unweighted ``||target_theta(x_t, t) - target||^2`` ``(B,)`` at ``x_t = alpha x0 + sigma z``.

    Args:
      model_fn: network ``(x, t) -> (B, *D)``.
      x0, z: data and noise, ``(B, *D)``.
      t: ``(B,)`` time passed to ``model_fn``.
      alpha, sigma: ``(B,)`` coefficients of ``x_t``.
      parameterization: what ``model_fn`` predicts; converted to ``target``.
      target: ``"eps"`` (reference ``z``) or ``"x0"`` (reference ``x0``).
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    check_batch(x0, z, t)
    x0, z = jnp.asarray(x0), jnp.asarray(z)
    x_t = perturb(x0, z, alpha, sigma)
    out = call_model(model_fn, x_t, jnp.asarray(t))
    predict, reference = _TARGETS[target]
    pred = out if parameterization.name == target else predict(parameterization, out, x_t, alpha,
                                                                sigma)
    return squared_error(pred, reference(x0, z, alpha, sigma))


def dsm_loss(model_fn: ModelFn, x0: ArrayLike, z: ArrayLike, t: ArrayLike, *, sde,
             parameterization: Parameterization,
             weighting: Weighting = sigma2_weighting) -> jax.Array:
    r"""Denoising score matching (Vincent 2011; Song et al. 2021, Eq. 7), per example ``(B,)``:

    .. math:: \tfrac12 \lambda(t)\, \|s_\theta(x_t, t) - \nabla_{x_t}\log p_{0t}(x_t|x_0)\|^2
              = \tfrac12 \frac{\lambda(t)}{\sigma_t^2} \|\epsilon_\theta(x_t, t) - z\|^2 .

    The 1/2 is score_sde's convention (``0.5 * sum`` in ``get_sde_loss_fn``). The right-hand
    form is what is computed (exact identity, better conditioned at small ``sigma_t``); the
    network output reaches eps through ``parameterization``.

    Args:
      model_fn: network ``(x, t) -> (B, *D)``.
      x0, z: data and standard normal noise, ``(B, *D)``.
      t: ``(B,)`` times in ``(0, T]``.
      sde: a linear SDE (``marginal_coeffs``).
      parameterization: what the network predicts.
      weighting: score-space ``lambda(sde, t) -> (B,)``.
    """
    alpha, sigma = sde.marginal_coeffs(t)
    err = denoising_error(model_fn, x0, z, t, alpha, sigma, parameterization, "eps")
    return 0.5 * weighting(sde, t) / sigma**2 * err


def denoising_loss(model_fn: ModelFn, x0: ArrayLike, z: ArrayLike, t: ArrayLike, *, sde,
                   parameterization: Parameterization, target: str = "eps",
                   weighting: Weighting = unit_weighting) -> jax.Array:
    r"""Continuous-time epsilon or x0 regression ``1/2 w(t) ||target_theta - target||^2`` ``(B,)``.

    ``target="eps"`` with ``weighting=unit_weighting`` is half Ho et al. 2020's simple loss
    (Eq. 14) with continuous ``t``, equal to ``dsm_loss`` with ``sigma2_weighting`` (the 1/2 of
    every loss here, score_sde's ``0.5 * sum``); ``eps_elbo_weight`` / ``x0_elbo_weight`` give the
    continuous ELBO (equal to ``dsm_loss`` with ``likelihood_weighting``). ``weighting(sde, t)`` is
    a target-space weight (``sde_lib.losses.weighting``).
    """
    alpha, sigma = sde.marginal_coeffs(t)
    err = denoising_error(model_fn, x0, z, t, alpha, sigma, parameterization, target)
    return 0.5 * weighting(sde, t) * err


def ddpm_loss(model_fn: ModelFn, x0: ArrayLike, z: ArrayLike, i: ArrayLike, *, sde, chain,
              parameterization: Parameterization, target: str = "eps",
              weighting: Callable = ddpm_unit_weight) -> jax.Array:
    r"""Discrete DDPM loss ``1/2 w_i ||target_theta(x_i, t_i) - target||^2`` ``(B,)``.

    The index ``i`` is at the time ``t_i = (i + 1) T / N``, which the network sees, and
    ``x_i = alpha_{t_i} x0 + sigma_{t_i} z`` with the SDE's marginal coefficients, the ones every
    sampler and ``models.get_score_fn`` read. For ``DiscreteVPSDE`` (the chain as an SDE) they are
    ``sqrt(alpha_bar_i)`` and ``sqrt(1 - alpha_bar_i)``: Ho et al. 2020's Eq. 4. With
    ``ddpm_unit_weight`` and ``target="eps"`` the loss is half Ho et al.'s ``L_simple``
    (Algorithm 1, Eq. 14; score_sde's ``0.5 * sum``); with ``ddpm_eps_elbo_weight`` /
    ``ddpm_x0_elbo_weight`` it is the ELBO term ``L_{i-1}`` (Eq. 12) without its
    model-independent constant. Bind the reverse variance with
    ``functools.partial(weight, variance=...)``.

    Args:
      i: int ``(B,)`` indices in ``0 .. N-1``.
      sde: the SDE whose marginal gives ``x_i`` (``N`` and ``T`` map ``i`` to ``t_i``).
      chain: its ``DDPMChain`` (the ELBO weights).
    """
    i = jnp.asarray(i)
    t = (i + 1).astype(jnp.result_type(float)) * (sde.T / chain.N)
    alpha, sigma = sde.marginal_coeffs(t)
    err = denoising_error(model_fn, x0, z, t, alpha, sigma, parameterization, target)
    return 0.5 * weighting(chain, i) * err
