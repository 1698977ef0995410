"""A polite stop: SIGTERM (what schedulers send before preempting a job) and SIGINT (Ctrl-C)
finish the current step, save a checkpoint, release the workdir's lock and end the run with
``Preempted``; a second signal ends the process at once.

Across processes the stop is agreed: each call's flags are summed over every device of every
process (a one-scalar ``psum``, read one call later so the host never waits for it), so every
process stops after the same call and saves the same checkpoint collectively, whichever of
them was signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np

from trainer.step import AXIS

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):  # noqa: N818 (what happened to the run, not an error of its own)
    """The run stopped at ``step`` on signal ``signum`` after saving a checkpoint there.

    ``exit_code`` is the shell's code for the signal (143 for SIGTERM, 130 for SIGINT), what
    ``trainer.main`` exits with; running the same command again resumes from ``step``.
    """

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"stopped at step {step} on {signal.Signals(signum).name}, saved "
                         f"{checkpoint}; run the same command again to resume")


class StopSignals:
    """Catches SIGTERM and SIGINT inside a ``with`` block (in the main thread; elsewhere it
    catches nothing) and tells the training loop when to stop (``poll``).

    Args:
      devices: the devices of this process that the run's ``pmap`` spans.
      pmap_devices: every process's devices of that ``pmap`` (the agreement's ``psum``).
    """

    def __init__(self, devices=None, pmap_devices=None):
        self.signum: int | None = None
        self.devices = devices
        self.multi = jax.process_count() > 1
        self._previous: dict[int, object] = {}
        self._pending = None
        if self.multi:
            self._psum = jax.pmap(lambda f: jax.lax.psum(f, AXIS), AXIS, devices=pmap_devices)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: the signal's own action, now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing the current step and "
              f"saving a checkpoint (send it again to stop at once)", file=sys.stderr,
              flush=True)

    def _flags(self):
        flag = np.array([[self.signum == signum for signum in SIGNALS]] * len(self.devices),
                        np.int32)
        return self._psum(flag)

    def poll(self) -> int | None:
        """After each call: the signal to stop on (every process gets the same answer at the
        same call), or ``None`` to go on."""
        if not self.multi:
            return self.signum
        previous, self._pending = self._pending, self._flags()
        return _first(previous)

    def agree(self) -> int | None:
        """``poll`` that waits for every process's current flag (at the end of training)."""
        return _first(self._flags()) if self.multi else self.signum


def _first(flags) -> int | None:
    """The signal of a ``psum`` of flags (SIGTERM before SIGINT when processes got both), or
    ``None`` when no process was signalled."""
    if flags is None:
        return None
    counts = np.asarray(flags.addressable_shards[0].data).reshape(-1)
    return next((signum for signum, n in zip(SIGNALS, counts, strict=True) if n > 0), None)
