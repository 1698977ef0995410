"""Array helpers shared by sde_lib: per-example coefficients, sums over the data axes, padded
grids, and functions passed to ``jax.jit`` as pytrees."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
    shape = jnp.shape(x)
    if c.ndim > len(shape) or any(a not in (b, 1)
                                  for a, b in zip(c.shape, shape[:c.ndim], strict=True)):
        raise ValueError(f"a per-example coefficient (from t) of shape {c.shape} does not fit x "
                         f"of shape {shape}: t must be a scalar or shaped (B,) = "
                         f"{shape[:1]}")
    return c.reshape(c.shape + (1,) * (len(shape) - c.ndim))


def sum_except_batch(x: jax.Array) -> jax.Array:
    """Sums ``(B, *D)`` over every axis but the first: ``(B,)``."""
    return jnp.sum(x, axis=tuple(range(1, jnp.ndim(x))))


def pad_with_last(a, size: int) -> np.ndarray:
    """``a`` (along its first axis, as numpy) padded to ``size`` entries by repeating its last
    entry: the padded grids and chains whose first entries a traced trip count runs over."""
    a = np.asarray(a)
    return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)])


def as_pytree_fn(fn):
    """``fn`` as a pytree that ``jax.jit`` takes as an argument: itself if it is one (e.g.
    ``models.get_score_fn``'s ``Partial``, whose leaves are the parameters), else
    ``jax.tree_util.Partial(fn)`` (no leaves: compiled once per function object, as a static
    argument would be)."""
    leaves = jax.tree.leaves(fn)
    if len(leaves) == 1 and leaves[0] is fn:
        return jax.tree_util.Partial(fn)
    return fn
