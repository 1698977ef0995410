"""orbax checkpoints of a training run: the train state and the data position, saved atomically.

A checkpoint of step ``s`` is the directory ``workdir/checkpoints/<s>`` with two items:
``state`` (the pytree of ``TrainState``: step, params, opt_state, ema_params, rng) and ``data``
(the ``DataState`` of the train iterator as JSON). orbax writes each checkpoint into a temporary
directory and renames it when complete, so a process killed during a save leaves the previous
checkpoints intact; unfinished temporary directories are never listed as steps and are removed on
the next start (``cleanup_tmp_directories``). The last ``keep`` checkpoints are kept. A damaged
newest checkpoint (files removed, truncated or overwritten after the save) is moved aside with a
warning and the newest intact one is restored (``restore_checkpoint``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from trainer.data import DataState


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


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was moved aside; an older one is used."""


def restore_checkpoint(manager: ocp.CheckpointManager, target, step: int | None = None):
    """The state (with ``target``'s structure and dtypes) and ``DataState`` of ``step`` (default:
    the newest intact checkpoint), or ``(None, None)`` when there is none.

    Without ``step``, a checkpoint that fails to restore (missing or truncated files, corrupt
    bytes, bad metadata: whatever orbax and tensorstore detect) is renamed to
    ``<step>.damaged`` (kept for inspection, no longer listed), a ``DamagedCheckpointWarning``
    names it and the error, and the next older one is tried. With ``step``, its error is raised.
    """
    if step is not None:
        return _restore(manager, target, step)
    for candidate in sorted(manager.all_steps(), reverse=True):
        try:  # as saved, without the target: what fails here is damage, not a changed config
            manager.restore(candidate, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 (orbax/tensorstore raise many kinds)
            _move_aside(manager, candidate, error)
            continue
        return _restore(manager, target, candidate)
    return None, None


def _move_aside(manager, step: int, error: Exception) -> None:
    path = os.path.join(os.fspath(manager.directory), str(step))
    aside, n = path + ".damaged", 1
    while os.path.exists(aside):
        n += 1
        aside = f"{path}.damaged-{n}"
    if jax.process_index() == 0:  # one process renames; every process falls back alike
        os.rename(path, aside)
    manager.reload()
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    warnings.warn(f"checkpoint {path} is damaged ({type(error).__name__}: {first_line}); moved "
                  f"to {aside}, trying the previous one", DamagedCheckpointWarning, stacklevel=3)


def _restore(manager, target, step):
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_to_host(target)),
            data=ocp.args.JsonRestore()))
        pairs = jax.tree_util.tree_flatten_with_path(target)[0]
        saved = jax.tree.leaves(jax.tree.map(lambda t, r: r, target, restored["state"]))
    except (ValueError, TypeError, KeyError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"checkpoint {step} in {manager.directory} does not fit this config's "
                         f"train state (a changed model or optimizer?): {first_line}") from error
    wrong = [f"{jax.tree_util.keystr(path)}: saved {np.shape(r)}, config {np.shape(t)}"
             for (path, t), r in zip(pairs, saved, strict=True) if np.shape(t) != np.shape(r)]
    if wrong:
        raise ValueError(f"checkpoint {step} in {manager.directory} does not fit this config's "
                         f"train state (a changed model?): {len(wrong)} arrays differ in shape, "
                         f"e.g. {'; '.join(wrong[:3])}")
    state = jax.tree.map(lambda t, r: np.asarray(r, dtype=np.asarray(t).dtype), target,
                         restored["state"])
    return state, DataState.from_dict(restored["data"])


class WorkdirLock:
    """An exclusive lock on a training workdir: the file ``<workdir>/train.lock`` holding the
    holder's PID and host, created atomically (``O_CREAT | O_EXCL``) and removed on release.

    A second run into the same workdir is refused with a ``RuntimeError`` naming the holder. A
    lock left by a process that died without releasing it (SIGKILL) is taken over, with a
    warning, when its host is this host and its PID is not running; a lock from another host
    cannot be checked and is refused (remove the file when that run is gone). Only process 0 of
    a multi-process run takes the lock.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.path.abspath(os.fspath(workdir)), "train.lock")
        self.held = False

    def acquire(self) -> WorkdirLock:
        if jax.process_index() != 0:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = self._holder()
                if host == socket.gethostname() and pid is not None and not _alive(pid):
                    warnings.warn(f"taking over the lock {self.path} of process {pid}, which "
                                  f"is no longer running", stacklevel=2)
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path)
                    continue
                raise RuntimeError(
                    f"workdir {os.path.dirname(self.path)} is in use by process {pid} on host "
                    f"{host} (lock file {self.path}); wait for that run to finish, use another "
                    f"workdir, or remove the lock file if that run is gone") from None
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return self
        raise RuntimeError(f"could not take the lock {self.path}")

    def _holder(self) -> tuple[int | None, str]:
        try:
            with open(self.path) as f:
                pid, host = f.read().split()
            return int(pid), host
        except (OSError, ValueError):  # being written or damaged: treat as held, unknown
            return None, "unknown"

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.held = False

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# fields whose change makes the checkpoints another run's: shapes, data stream, objective
FIXED_FIELDS = ("data.", "model.", "model_name", "loss.", "sde.", "training.batch_size",
                "training.seed", "training.rng_block_size")
# ... except these, which only say where the same data is
MOVABLE_FIELDS = ("data.data_dir",)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def check_config(workdir: str | os.PathLike, config: dict, has_checkpoint: bool) -> list[str]:
    """Compares the resolved ``config`` (nested dicts) with the one saved in
    ``<workdir>/config.json`` (by ``save_config``) when the workdir has checkpoints.

    Returns:
      the changed fields that are safe to resume with (``"training.num_train_steps: 300 ->
      600"``, any field outside ``FIXED_FIELDS``: step counts, intervals, learning rate,
      evaluation and sampling settings).

    Raises:
      ValueError: a changed field of ``FIXED_FIELDS`` (model shapes, data and its stream, loss,
        SDE, batch size, seed), naming each with its old and new value; nothing is written.
    """
    path = os.path.join(os.path.abspath(os.fspath(workdir)), "config.json")
    new = json.loads(json.dumps(config, default=str, sort_keys=True))
    changes = []
    if has_checkpoint and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        flat_old, flat_new = _flatten(old), _flatten(new)
        changed = sorted(k for k in flat_old.keys() | flat_new.keys()
                         if flat_old.get(k, "<absent>") != flat_new.get(k, "<absent>"))
        describe = {k: f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}"
                    for k in changed}
        # a field the saved config lacks is new in this version (its default keeps the old
        # behaviour): resumed with a warning
        fixed = [k for k in changed if k.startswith(FIXED_FIELDS)
                 and not k.startswith(MOVABLE_FIELDS) and k in flat_old]
        if fixed:
            raise ValueError(
                f"the config differs from the one the checkpoints in {workdir} were trained "
                f"with ({path}) in fields that change the model, its data or its objective: "
                f"{'; '.join(describe[k] for k in fixed)}. Use another workdir, or restore "
                f"those values")
        changes = [describe[k] for k in changed]
    return changes


def save_config(workdir: str | os.PathLike, config: dict) -> None:
    """Writes the resolved ``config`` to ``<workdir>/config.json`` atomically (process 0); the
    trainer calls it once the checkpoints (if any) restored into this config."""
    if jax.process_index() != 0:
        return
    path = os.path.join(os.path.abspath(os.fspath(workdir)), "config.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(json.loads(json.dumps(config, default=str)), f, indent=1, sort_keys=True)
    os.replace(tmp, path)

