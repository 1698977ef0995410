"""Validation of model config fields (raised at construction, before any tracing)."""

from __future__ import annotations

import numbers

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
