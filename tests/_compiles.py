"""Counting XLA compilations in a test (jax.monitoring's backend-compile events)."""

import contextlib
from typing import NamedTuple

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


class Compilation(NamedTuple):
    name: str  # the compiled function, e.g. "jit(_sweep_program)" or "jit(exp)"
    seconds: float


@contextlib.contextmanager
def count_compilations():
    """``with count_compilations() as n:`` ... ``len(n)`` compilations happened inside, each a
    ``Compilation(name, seconds)``."""
    events = []

    def listener(event, duration, **kwargs):
        if event == _EVENT:
            events.append(Compilation(kwargs.get("fun_name", "?"), duration))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
