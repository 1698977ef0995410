"""Argument validation and shape helpers shared by sde_lib (no JAX tracing here)."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


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


def concrete_or_none(value):
    """``value`` as a numpy array, or ``None`` for a tracer (checked only outside ``jit``)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
        return None
    return np.asarray(value)


def check_times(name: str, t, T: float):
    """Returns ``t``; raises ValueError if a concrete ``t`` has values outside ``[0, T]`` or
    not finite (under ``jit`` the values cannot be checked and pass through)."""
    a = concrete_or_none(t)
    if a is not None and a.size and (not np.all(np.isfinite(a)) or a.min() < 0
                                     or a.max() > T * (1 + 1e-6)):
        raise ValueError(f"{name} must lie in [0, T={T}], got values in [{float(a.min())}, "
                         f"{float(a.max())}]")
    return t


def check_index(name: str, i, N: int):
    """Returns ``i``; raises ValueError if a concrete ``i`` is not an integer in ``0 .. N - 1``
    (a traced ``i`` is clamped by JAX's indexing, documented where it is used)."""
    a = concrete_or_none(i)
    if a is not None and a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0
                                     or a.max() >= N):
        raise ValueError(f"{name} must be integers in 0 .. N - 1 = {N - 1}, got {a.dtype} "
                         f"values in [{a.min().item()}, {a.max().item()}]")
    return i

