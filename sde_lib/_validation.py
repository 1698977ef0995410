"""Argument validation shared by sde_lib: a bad argument raises ValueError naming it, before
anything is traced.

Concrete values are checked in Python; traced ones (under ``jit``) cannot be, and pass through
unless ``debug_checks()`` is on, where the value checks become ``jax.experimental.checkify``
checks (run the function under ``checkify.checkify`` and call ``err.throw()``)."""

from __future__ import annotations

import contextlib
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

_DEBUG = [False]


@contextlib.contextmanager
def debug_checks(enabled: bool = True):
    """Within the block, functions traced check their traced times and indices with
    ``checkify.check`` (outside ``checkify.checkify`` such a check is an error of its own, so
    only functions run under ``checkify.checkify`` should be traced here)::

        with sde_lib.debug_checks():
            f = checkify.checkify(jax.jit(lambda t: sde.marginal_prob(x, t)))
            err, out = f(t)
        err.throw()  # ValueError-like JaxRuntimeError naming t and its range
    """
    before = _DEBUG[0]
    _DEBUG[0] = bool(enabled)
    try:
        yield
    finally:
        _DEBUG[0] = before


def check_choice(name: str, value, choices) -> str:
    """Returns ``value`` or raises ValueError naming ``name`` and the valid ``choices`` (a
    sequence or mapping of names) if it is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_positive(name: str, value) -> float:
    """Returns ``float(value)`` or raises ValueError naming ``name`` if it is not a finite
    real number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive real number, got {value!r}")
    return float(value)


def check_nonneg(name: str, value) -> float:
    """Returns ``float(value)`` or raises ValueError naming ``name`` if it is not a real
    number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
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


def concrete_or_none(value):
    """``value`` as a numpy array, or ``None`` for a tracer (checked only outside ``jit``)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
        return None
    return np.asarray(value)


def check_times(name: str, t, T: float):
    """Returns ``t``; raises ValueError if a concrete ``t`` has values outside ``[0, T]`` or
    not finite (under ``jit`` the values cannot be checked and pass through)."""
    a = concrete_or_none(t)
    if a is None and _DEBUG[0] and jnp.size(t):
        checkify.check(jnp.all(jnp.isfinite(t) & (t >= 0) & (t <= T * (1 + 1e-6))),
                       f"{name} must lie in [0, T={T}], got values in [{{lo}}, {{hi}}]",
                       lo=jnp.min(t), hi=jnp.max(t))
    if a is not None and a.size and (not np.all(np.isfinite(a)) or a.min() < 0
                                     or a.max() > T * (1 + 1e-6)):
        raise ValueError(f"{name} must lie in [0, T={T}], got values in [{float(a.min())}, "
                         f"{float(a.max())}]")
    return t


def check_index(name: str, i, N: int):
    """Returns ``i``; raises ValueError if a concrete ``i`` is not an integer in ``0 .. N - 1``
    (a traced ``i`` is clamped by JAX's indexing, documented where it is used)."""
    a = concrete_or_none(i)
    if a is None and _DEBUG[0] and jnp.size(i):
        checkify.check(jnp.all((i >= 0) & (i < N)),
                       f"{name} must be integers in 0 .. N - 1 = {N - 1}, got values in "
                       f"[{{lo}}, {{hi}}]", lo=jnp.min(i), hi=jnp.max(i))
    if a is not None and a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0
                                     or a.max() >= N):
        raise ValueError(f"{name} must be integers in 0 .. N - 1 = {N - 1}, got {a.dtype} "
                         f"values in [{a.min().item()}, {a.max().item()}]")
    return i
