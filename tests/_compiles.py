"""Counting XLA compilations in a test (jax.monitoring's backend-compile events)."""

import contextlib

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
    """``with count_compilations() as n:`` ... ``len(n)`` compilations happened inside."""
    events = []

    def listener(event, duration, **kwargs):
        if event == _EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
