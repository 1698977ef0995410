"""orbax checkpoints of a training run: the train state and the data position, saved atomically.

A checkpoint of step ``s`` is the directory ``workdir/checkpoints/<s>`` with two items:
``state`` (the pytree of ``TrainState``: step, params, opt_state, ema_params, rng) and ``data``
(the ``DataState`` of the train iterator as JSON). orbax writes each checkpoint into a temporary
directory and renames it when complete, so a process killed during a save leaves the previous
checkpoints intact; unfinished temporary directories are never listed as steps and are removed on
the next start (``cleanup_tmp_directories``). The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.data import DataState


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")


def create_manager(workdir: str | os.PathLike, keep: int = 3) -> ocp.CheckpointManager:
    """A synchronous ``CheckpointManager`` on ``workdir/checkpoints`` keeping the last ``keep``.

    Saves are synchronous (``save`` returns once the checkpoint is renamed into place), so that
    a line printed after ``save_checkpoint`` means the checkpoint is on disk.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state", "data"))


def _to_host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def save_checkpoint(manager: ocp.CheckpointManager, state, data_state: DataState) -> int:
    """Saves the (unreplicated) ``state`` and ``data_state`` at step ``int(state.step)``."""
    step = int(jax.device_get(state.step))
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_host(state)),
        data=ocp.args.JsonSave(data_state.to_dict())), force=True)
    manager.wait_until_finished()
    return step


def restore_checkpoint(manager: ocp.CheckpointManager, target, step: int | None = None):
    """The state (with ``target``'s structure and dtypes) and ``DataState`` of ``step`` (default:
    the latest), or ``(None, None)`` when there is no checkpoint."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None, None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_to_host(target)),
        data=ocp.args.JsonRestore()))
    state = jax.tree.map(lambda t, r: np.asarray(r, dtype=np.asarray(t).dtype), target,
                         restored["state"])
    return state, DataState.from_dict(restored["data"])
