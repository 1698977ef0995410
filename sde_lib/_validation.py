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


def debugging() -> bool:
    """Whether ``debug_checks()`` is on: traced values are then checked by ``checkify``."""
    return _DEBUG[0]


def closest(value, choices) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a misspelt ``value``, else ``""``."""
    import difflib
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_choice(name: str, value, choices) -> str:
    """Returns ``value`` or raises ValueError naming ``name``, the valid ``choices`` (a
    sequence or mapping of names) and the closest one if it is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}"
                         f"{closest(value, choices)}")
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


def check_count(name: str, value) -> int:
    """Returns ``int(value)`` or raises ValueError if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# The most steps of a time grid, a chain or a padded grid: a grid holds about 15 float64
# coefficients per step (``sampling.grid.GridCoeffs``) and a key per step, ~130 MB at this
# size; a larger count is refused before anything is allocated (1e9 steps would take 120 GB).
MAX_NUM_STEPS = 10**6


def check_num_steps(name: str, value) -> int:
    """Returns ``int(value)`` or raises ValueError if it is not an integer in
    ``1 .. MAX_NUM_STEPS``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 1 <= value <= MAX_NUM_STEPS):
        raise ValueError(f"{name} must be an integer >= 1 and <= {MAX_NUM_STEPS} (a longer "
                         f"grid of steps is refused before it is allocated), got {value!r}")
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


def _kind(value) -> str:
    """What ``value`` is, for a message: an array's dtype and shape, else its type's name."""
    if isinstance(value, jax.Array | np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return "None" if value is None else type(value).__name__


def check_rng(name: str, rng):
    """Returns ``rng``; raises TypeError unless it is one ``jax.random`` key: a typed key
    (``jax.random.key``, shape ``()``) or raw key data (``jax.random.PRNGKey``, uint32 of shape
    ``(n,)``), concrete or traced."""
    if isinstance(rng, jax.Array | np.ndarray) and (
            (jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.shape == ())
            or (rng.dtype == np.uint32 and rng.ndim == 1)):
        return rng
    raise TypeError(f"{name} must be a jax PRNG key (jax.random.key(seed) or "
                    f"jax.random.PRNGKey(seed)), got {_kind(rng)}")


def check_sde(name: str, sde):
    """Returns ``sde``; raises TypeError unless it is one of sde_lib's SDEs (a ``LinearSDE``)."""
    from sde_lib.registry import SDES  # the registry imports the SDEs, which import this module
    from sde_lib.sde import LinearSDE
    if not isinstance(sde, LinearSDE):
        names = ", ".join(cls.__name__ for cls in SDES.values())
        raise TypeError(f"{name} must be an SDE of sde_lib (a LinearSDE: {names}; or "
                        f"sde_lib.get_sde(name)), got {_kind(sde)}")
    return sde


def check_floating(name: str, x) -> jax.Array:
    """``x`` as a jax array; raises TypeError unless its dtype is floating-point (integer
    images would silently be scored as they are)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array (scale integer data first, e.g. "
                        f"trainer.data.scale_images), got dtype {x.dtype}")
    return x


def check_finite(name: str, x, where: str = ""):
    """Returns ``x`` (an array or a pytree of arrays); raises ValueError if it is concrete and
    holds NaN or inf (checked on the host); a traced ``x`` is checked only within
    ``debug_checks()``, by ``checkify``."""
    message = f"{name} must be finite: it holds NaN or inf values{where}"
    leaves = jax.tree.leaves(x)
    arrays = [concrete_or_none(a) for a in leaves]
    if any(a is None for a in arrays):
        if debugging():
            checkify.check(jnp.all(jnp.array([jnp.all(jnp.isfinite(a)) for a in leaves])),
                           message.replace("{", "{{").replace("}", "}}"))
    elif not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError(message)
    return x


def _first_entries(x, t):
    """Each example's first entry of ``x`` (a scalar for a scalar ``t``), without gradient."""
    x = jax.lax.stop_gradient(x)
    if jnp.ndim(t) == 1 and jnp.shape(t)[0] == jnp.shape(x)[0]:
        first = jnp.reshape(x, (jnp.shape(x)[0], -1))[:, 0]
    else:
        first = jnp.ravel(x)[0]
    return first.astype(jnp.result_type(t))


def shape_checked(score_fn):
    """``score_fn`` that raises ValueError, when traced, unless its output is a floating array
    shaped like its input ``x`` (a ``(1, D)`` or ``(B, 1)`` output would otherwise broadcast
    silently), and raises ValueError for a concrete output holding NaN or inf (a traced one is
    a ``checkify`` check within ``debug_checks()``); its evaluations run one after another.

    ``t`` becomes ``t + 0 x_0`` (``x_0`` each example's first entry), which orders each score
    evaluation after its ``x``, so two evaluations at one ``t`` never run their ``t``-only LAPACK
    calls at once (an XLA:CPU deadlock; see docs/known_issues.md).
    """
    def checked(x, t):
        t = t + 0.0 * _first_entries(x, t)
        out = score_fn(x, t)
        if (jnp.shape(out) != jnp.shape(x)
                or not jnp.issubdtype(jnp.result_type(out), jnp.floating)):
            raise ValueError(f"score_fn must return a floating array shaped like x "
                             f"{jnp.shape(x)}, got {jnp.result_type(out)} of shape "
                             f"{jnp.shape(out)}")
        return check_finite("score_fn(x, t)", out)
    return checked
