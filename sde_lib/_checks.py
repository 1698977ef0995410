"""Argument validation and shape helpers shared by sde_lib (no JAX tracing here)."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp


def check_positive(name: str, value) -> float:
    """Returns ``float(value)`` or raises ValueError naming ``name`` if it is not a finite
    real number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive real number, got {value!r}")
    return float(value)


def check_num_steps(name: str, value) -> int:
    """Returns ``int(value)`` or raises ValueError if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_ordered(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    """Raises ValueError unless ``lo < hi``."""
    if not lo < hi:
        raise ValueError(f"{lo_name} must be smaller than {hi_name}, got {lo_name}={lo!r}, "
                         f"{hi_name}={hi!r}")


def batch_coeff(c: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-example coefficient ``c`` of shape ``(B,)`` to broadcast against ``x``.

    Args:
      c: ``(B,)`` (or a scalar, returned unchanged).
      x: ``(B, *D)``.

    Returns:
      ``c`` reshaped to ``(B, 1, ..., 1)`` with ``x.ndim`` axes.
    """
    c = jnp.asarray(c)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (jnp.ndim(x) - c.ndim))


def sum_except_batch(x: jax.Array) -> jax.Array:
    """Sums ``(B, *D)`` over every axis but the first: ``(B,)``."""
    return jnp.sum(x, axis=tuple(range(1, jnp.ndim(x))))
