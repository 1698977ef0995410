r"""Explicit (Hyvarinen) and sliced score matching, and their noise-conditional forms.

For a score model ``s(x)`` with Jacobian ``J = grad_x s``:

* explicit score matching (Hyvarinen 2005, Theorem 1): ``1/2 ||s||^2 + Tr J``;
* sliced score matching (Song et al. 2019, Eq. 8): ``v^T J v + 1/2 (v^T s)^2``, ``v ~ p_v``;
* SSM-VR (Song et al. 2019, Eq. 9): ``v^T J v + 1/2 ||s||^2`` (the ``(v^T s)^2`` term replaced by
  its expectation); with Gaussian or Rademacher ``v`` this is also Hutchinson's estimator
  (Hutchinson 1989) of explicit score matching.

Probes ``v`` have ``E[v v^T] = I``: standard Gaussian, Rademacher (``+-1``), or uniform on the
sphere of radius ``sqrt(d)`` (``d`` the number of data entries), so every estimator is unbiased
for the explicit objective. ``v^T J v`` is one ``jax.jvp`` per probe (``jax.linearize`` once, then
``vmap`` over probes); the exact trace sums ``e_k^T J e_k`` over the ``d`` basis vectors, which is
what ``jax.jacfwd`` would compute, without forming ``J``.

The Jacobian is taken of the batched ``score_fn``, so ``J v`` is per example only when examples
do not interact inside the model (no batch statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sde_lib._arrays import sum_except_batch
from sde_lib.divergence import PROBES
from sde_lib.losses.denoising import ModelFn, Weighting, check_batch, perturb
from sde_lib.losses.weighting import sigma2_weighting
from sde_lib.parameterization import Parameterization


def get_model_score_fn(model_fn: ModelFn, sde,
                       parameterization: Parameterization) -> Callable:
    """``score_fn(x, t) = parameterization.to_score(model_fn(x, t), x, alpha_t, sigma_t)``.

    The same conversion as ``models.get_score_fn``; its ``x``-derivative includes the explicit
    ``x`` dependence of the x0 and v parameterizations.
    """

    def score_fn(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        return parameterization.to_score(model_fn(x, t), x, alpha, sigma)

    return score_fn


def sample_probes(rng: jax.Array, shape, num_probes: int, kind: str = "rademacher",
                  dtype=None) -> jax.Array:
    """``num_probes`` probe vectors per example with ``E[v v^T] = I``: ``(num_probes, *shape)``.

    Args:
      shape: ``(B, *D)``.
      kind: ``"gaussian"``, ``"rademacher"`` or ``"sphere"`` (uniform direction, norm
        ``sqrt(prod(D))``).
    """
    if kind not in PROBES:
        raise ValueError(f"projection must be one of {PROBES}, got {kind!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_projections must be an integer >= 1, got {num_probes!r}")
    dtype = dtype or jnp.result_type(float)
    full = (num_probes, *shape)
    if kind == "rademacher":
        return jax.random.rademacher(rng, full, dtype)
    v = jax.random.normal(rng, full, dtype)
    if kind == "sphere":
        d = math.prod(shape[1:])
        norm = jnp.sqrt(jnp.sum(v**2, axis=tuple(range(2, v.ndim)), keepdims=True))
        v = v * (math.sqrt(d) / norm)
    return v


def _check_probes(probes: jax.Array, x: jax.Array) -> None:
    if jnp.ndim(probes) != jnp.ndim(x) + 1 or jnp.shape(probes)[1:] != jnp.shape(x):
        raise ValueError(f"probes must have shape (K, *x.shape) with x.shape = {x.shape}, got "
                         f"{jnp.shape(probes)}")


def quadratic_forms(score_fn: Callable, x: ArrayLike,
                    probes: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``s = score_fn(x)`` ``(B, *D)`` and ``v_k^T J v_k`` ``(K, B)`` for probes ``(K, B, *D)``."""
    x = jnp.asarray(x)
    _check_probes(probes, x)
    s, jvp_fn = jax.linearize(score_fn, x)
    if jnp.shape(s) != jnp.shape(x):
        raise ValueError(f"score_fn output must have the shape of x {x.shape}, got {s.shape}")
    Jv = jax.vmap(jvp_fn)(probes)
    return s, jnp.sum(probes * Jv, axis=tuple(range(2, Jv.ndim)))


def basis_probes(x: ArrayLike) -> jax.Array:
    """The ``d`` standard basis vectors of the data space, broadcast per example: ``(d, B, *D)``."""
    shape = jnp.shape(x)
    d = math.prod(shape[1:])
    eye = jnp.eye(d, dtype=jnp.asarray(x).dtype).reshape((d, 1, *shape[1:]))
    return jnp.broadcast_to(eye, (d, *shape))


def explicit_score_matching(score_fn: Callable, x: ArrayLike,
                            probes: ArrayLike | None = None) -> jax.Array:
    r"""Hyvarinen 2005 (Theorem 1): ``1/2 ||s(x)||^2 + Tr grad_x s(x)``, per example ``(B,)``.

    Args:
      score_fn: ``x (B, *D) -> (B, *D)`` at a fixed time.
      x: ``(B, *D)``.
      probes: ``None`` for the exact trace (``d`` jvps, for small ``d``) or ``(K, B, *D)`` probes
        with ``E[v v^T] = I`` for Hutchinson's estimator ``mean_k v_k^T J v_k``.
    """
    x = jnp.asarray(x)
    check_batch(x)
    exact = probes is None
    s, q = quadratic_forms(score_fn, x, basis_probes(x) if exact else probes)
    trace = jnp.sum(q, axis=0) if exact else jnp.mean(q, axis=0)
    return 0.5 * sum_except_batch(s**2) + trace


def sliced_score_matching(score_fn: Callable, x: ArrayLike, probes: ArrayLike,
                          variance_reduction: bool = False) -> jax.Array:
    r"""Sliced score matching, averaged over ``K`` probes per example ``(B,)``.

    ``mean_k [v_k^T J v_k + 1/2 (v_k^T s)^2]`` (Song et al. 2019, Eq. 8), or with
    ``variance_reduction`` ``mean_k v_k^T J v_k + 1/2 ||s||^2`` (SSM-VR, Eq. 9).

    Args:
      score_fn: ``x (B, *D) -> (B, *D)`` at a fixed time.
      x: ``(B, *D)``.
      probes: ``(K, B, *D)`` with ``E[v v^T] = I`` (``sample_probes``).
    """
    x = jnp.asarray(x)
    check_batch(x)
    s, q = quadratic_forms(score_fn, x, probes)
    if variance_reduction:
        return jnp.mean(q, axis=0) + 0.5 * sum_except_batch(s**2)
    vs = jnp.sum(probes * s[None], axis=tuple(range(2, jnp.ndim(probes))))
    return jnp.mean(q + 0.5 * vs**2, axis=0)


def noise_conditional_loss(objective: Callable, model_fn: ModelFn, x0: ArrayLike, z: ArrayLike,
                           t: ArrayLike, *, sde, parameterization: Parameterization,
                           weighting: Weighting = sigma2_weighting) -> jax.Array:
    r"""``lambda(t) * objective(s(., t), x_t)`` at ``x_t = alpha_t x0 + sigma_t z`` ``(B,)``.

    The noise-conditional form of explicit or sliced score matching (Song et al. 2019,
    Section 4; Song et al. 2021, Eq. 7 with the sliced objective in place of DSM): its
    expectation is ``E_t lambda(t) (1/2 E_{p_t} ||s - grad log p_t||^2 - C(t))``.

    Args:
      objective: ``(score_fn_x, x_t) -> (B,)``, e.g. ``explicit_score_matching`` or
        ``functools.partial(sliced_score_matching, probes=v)``.
      model_fn, parameterization: the network and what it predicts (``get_model_score_fn``).
      x0, z: ``(B, *D)``; t: ``(B,)``; sde: a linear SDE.
      weighting: score-space ``lambda(sde, t)``.
    """
    check_batch(x0, z, t)
    t = jnp.asarray(t)
    alpha, sigma = sde.marginal_coeffs(t)
    x_t = perturb(x0, z, alpha, sigma)
    score_fn = get_model_score_fn(model_fn, sde, parameterization)
    return weighting(sde, t) * objective(lambda x: score_fn(x, t), x_t)
