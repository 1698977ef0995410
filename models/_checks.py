"""Validation of model config fields (raised at construction, before any tracing)."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from models.embeddings import as_time_embedding


def check_int(name: str, value, minimum: int = 1) -> int:
    """Returns ``value`` or raises ValueError unless it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_rate(name: str, value) -> float:
    """Returns ``value`` or raises ValueError unless ``0 <= value < 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def set_time_embedding(config) -> None:
    """Normalises ``config.time_embedding`` of a frozen dataclass in ``__post_init__``."""
    object.__setattr__(config, "time_embedding", as_time_embedding(config.time_embedding))


def check_inputs(x, t, min_data_ndim: int = 1, name: str = "network"):
    """Raises ValueError unless ``x`` is ``(B, *D)`` with ``len(D) >= min_data_ndim`` and
    ``t`` is ``(B,)``."""
    if x.ndim < 1 + min_data_ndim:
        raise ValueError(f"{name} needs x of rank >= {1 + min_data_ndim} (B, *D), got shape "
                         f"{x.shape}")
    if t.shape != x.shape[:1]:
        raise ValueError(f"t must have shape (B,) = {x.shape[:1]}, got {t.shape}")


@functools.lru_cache(maxsize=64)
def _expected_shapes(model: nn.Module, data_shape: tuple, x_dtype, t_dtype) -> dict:
    """``{"a/b/kernel": shape}`` of the params ``model.init`` makes for one example of
    ``data_shape`` (abstractly: ``jax.eval_shape``, nothing is allocated)."""
    variables = jax.eval_shape(model.init, jax.random.key(0),
                               jax.ShapeDtypeStruct((1, *data_shape), x_dtype),
                               jax.ShapeDtypeStruct((1,), t_dtype))
    return _leaf_shapes(variables.get("params", {}))


def _leaf_shapes(params) -> dict:
    return {k: tuple(jnp.shape(v))
            for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params),
                                                       sep="/").items()}


def check_params(model: nn.Module, params, x, t) -> None:
    """Raises ValueError, naming the first leaf that differs, unless ``params`` has the leaves
    and shapes ``model.init`` gives for inputs like ``x`` and ``t`` (where flax would raise a
    ``ScopeParamShapeError`` deep in the network, or ignore extra leaves)."""
    where = f"params do not fit the model {type(model).__name__} for x of shape {jnp.shape(x)}"
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: params must be the 'params' collection of model.init(...) "
                         f"(a mapping), got {type(params).__name__}")
    expected = _expected_shapes(model, tuple(jnp.shape(x)[1:]), jnp.result_type(x),
                                jnp.result_type(t))
    got = _leaf_shapes(params)
    problems = [f"shape mismatch of leaf {k}: params have {got[k]}, the model expects "
                f"{expected[k]}" for k in expected if k in got and got[k] != expected[k]]
    problems += [f"leaf {k} {expected[k]} is missing from params" for k in expected
                 if k not in got]
    problems += [f"params have leaf {k} {got[k]}, which the model does not use" for k in got
                 if k not in expected]
    if problems and set(got) >= set(f"params/{k}" for k in expected):
        problems.insert(0, "params hold a 'params' entry: pass variables['params'], not the "
                           "whole variables of model.init")
    if problems:
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise ValueError(f"{where}: {problems[0]}{more}. Pass the params that model.init (or "
                         f"the checkpoint of this model config) gives for this data shape.")
