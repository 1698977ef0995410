r"""Conversions between eps, score, x0 and v predictions, and Tweedie's formula.

For a linear SDE, ``x_t = alpha_t x_0 + sigma_t eps`` with ``eps ~ N(0, I)``; ``alpha`` and
``sigma`` are ``(B,)`` (``sde.marginal_coeffs(t)``). The four targets a network may predict are

* ``eps``;
* ``score = -eps / sigma``, the score of ``p_{0t}(x_t | x_0)`` (Vincent 2011; Song et al. 2021);
* ``x0 = (x_t - sigma eps) / alpha``;
* ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, Section 4), inverted for any ``alpha, sigma``
  (not only ``alpha^2 + sigma^2 = 1``) as ``x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)`` and
  ``eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)``.

Every conversion goes through ``eps``: ``Parameterization.to_eps`` and ``from_eps``. Applied to
the exact conditional expectations the formulas turn an optimal model of one kind into the
optimal model of another (Tweedie: ``E[eps | x_t] = -sigma grad log p_t(x_t)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff
from sde_lib._validation import check_sde, shape_checked

Converter = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _bc(c, x):
    return batch_coeff(c, x)


def eps_to_score(eps, x_t, alpha, sigma):
    """``score = -eps / sigma``."""
    return -eps / _bc(sigma, eps)


def score_to_eps(score, x_t, alpha, sigma):
    """``eps = -sigma score``."""
    return -_bc(sigma, score) * score


def eps_to_x0(eps, x_t, alpha, sigma):
    """``x0 = (x_t - sigma eps) / alpha``."""
    return (x_t - _bc(sigma, x_t) * eps) / _bc(alpha, x_t)


def x0_to_eps(x0, x_t, alpha, sigma):
    """``eps = (x_t - alpha x0) / sigma``."""
    return (x_t - _bc(alpha, x_t) * x0) / _bc(sigma, x_t)


def eps_to_v(eps, x_t, alpha, sigma):
    """``v = alpha eps - sigma x0`` with ``x0`` from ``(x_t, eps)``."""
    return _bc(alpha, x_t) * eps - _bc(sigma, x_t) * eps_to_x0(eps, x_t, alpha, sigma)


def v_to_eps(v, x_t, alpha, sigma):
    """``eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)``."""
    a, s = _bc(alpha, x_t), _bc(sigma, x_t)
    return (s * x_t + a * v) / (a**2 + s**2)


def _identity(eps, x_t, alpha, sigma):
    return eps


@dataclasses.dataclass(frozen=True)
class Parameterization:
    """What a network predicts, with its conversions to and from ``eps``.

    Both converters take ``(value, x_t, alpha, sigma)`` with ``alpha, sigma`` of shape ``(B,)``.
    """

    name: str
    to_eps: Converter
    from_eps: Converter

    def to_score(self, output: ArrayLike, x_t: ArrayLike, alpha: ArrayLike,
                 sigma: ArrayLike) -> jax.Array:
        """Score ``-eps / sigma`` implied by a network ``output``."""
        return eps_to_score(self.to_eps(output, x_t, alpha, sigma), x_t, alpha, sigma)

    def to_x0(self, output: ArrayLike, x_t: ArrayLike, alpha: ArrayLike,
              sigma: ArrayLike) -> jax.Array:
        """Denoised estimate ``x0`` implied by a network ``output``."""
        return eps_to_x0(self.to_eps(output, x_t, alpha, sigma), x_t, alpha, sigma)


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "eps": Parameterization("eps", _identity, _identity),
    "score": Parameterization("score", score_to_eps, eps_to_score),
    "x0": Parameterization("x0", x0_to_eps, eps_to_x0),
    "v": Parameterization("v", v_to_eps, eps_to_v),
}


def get_parameterization(name: str) -> Parameterization:
    """The ``Parameterization`` called ``name``: ``"eps"``, ``"score"``, ``"x0"`` or ``"v"``."""
    try:
        return PARAMETERIZATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"parameterization must be one of {sorted(PARAMETERIZATIONS)}, "
                         f"got {name!r}") from None


def convert(output: ArrayLike, x_t: ArrayLike, alpha: ArrayLike, sigma: ArrayLike,
            source: str, target: str) -> jax.Array:
    """Converts a prediction of kind ``source`` into the equivalent one of kind ``target``."""
    src, dst = get_parameterization(source), get_parameterization(target)
    return dst.from_eps(src.to_eps(output, x_t, alpha, sigma), x_t, alpha, sigma)


def tweedie_mean(score: ArrayLike, x_t: ArrayLike, alpha: ArrayLike,
                 sigma: ArrayLike) -> jax.Array:
    r"""Posterior mean ``E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha`` (Tweedie;
    Efron 2011, Eq. 2.8, with the mean coefficient of Song et al. 2021).

    Args:
      score: ``grad log p_t(x_t)``, ``(B, *D)``.
      x_t: ``(B, *D)``.
      alpha, sigma: ``(B,)``.
    """
    x_t = jnp.asarray(x_t)
    return (x_t + _bc(sigma**2, x_t) * score) / _bc(alpha, x_t)


def tweedie_covariance(score_jacobian: ArrayLike, alpha: ArrayLike,
                       sigma: ArrayLike) -> jax.Array:
    r"""Posterior covariance ``Cov[x_0 | x_t] = sigma^2 / alpha^2 (I + sigma^2 H)``, with
    ``H = grad^2 log p_t(x_t)`` the Jacobian of the score (second-order Tweedie; Meng et al.
    2021, Eq. 5).

    Args:
      score_jacobian: ``(B, d, d)``.
      alpha, sigma: ``(B,)``.

    Returns:
      ``(B, d, d)``.
    """
    H = jnp.asarray(score_jacobian)
    s2 = jnp.asarray(sigma) ** 2
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    return (s2 / jnp.asarray(alpha) ** 2)[:, None, None] * (eye[None] + s2[:, None, None] * H)


def posterior_moments(score_fn, sde, x_t: ArrayLike,
                      t: ArrayLike) -> tuple[jax.Array, jax.Array]:
    r"""Tweedie mean ``(B, d)`` and covariance ``(B, d, d)`` of ``x_0`` given ``x_t`` ``(B, d)``
    from ``score_fn(x, t)`` under a linear ``sde``; the Jacobian is taken per example with
    ``jax.jacfwd``.

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib.
      ValueError: a ``score_fn`` whose output is not a floating array shaped like ``x_t``, or
        (concrete) holds NaN or inf.
    """
    check_sde("sde", sde)
    score_fn = shape_checked(score_fn)
    x_t, t = jnp.asarray(x_t), jnp.asarray(t)
    alpha, sigma = sde.marginal_coeffs(t)
    score = score_fn(x_t, t)

    def single(x, ti):
        return score_fn(x[None], ti[None])[0]

    jac = jax.vmap(jax.jacfwd(single))(x_t, t)
    return tweedie_mean(score, x_t, alpha, sigma), tweedie_covariance(jac, alpha, sigma)
