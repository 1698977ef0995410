"""orbax checkpoints of a training run: the train state and the data position, saved atomically.

A checkpoint of step ``s`` is the directory ``workdir/checkpoints/<s>`` with three items:
``state`` (the pytree of ``TrainState``: step, params, opt_state, ema_params, rng), ``data``
(the ``DataState`` of the train iterator as JSON) and ``digest`` (SHA-256 of each array and of
the data state, checked on restore). orbax writes each checkpoint into a temporary
directory and renames it when complete, so a process killed during a save leaves the previous
checkpoints intact; unfinished temporary directories are never listed as steps and are removed on
the next start (``cleanup_tmp_directories``). The last ``keep`` checkpoints are kept. A damaged
newest checkpoint (files removed, truncated or bit rot after the save) is moved aside with a
warning and the newest intact one is restored (``restore_checkpoint``). The workdir's lock and
its ``config.json`` are ``trainer.workdirs``'s.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from trainer.data import DataState
from trainer.workdirs import ConfigMismatchError, WorkdirError


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")


ITEMS = ("state", "data", "digest")


def create_manager(workdir: str | os.PathLike, keep: int = 3, read_only: bool = False
                   ) -> ocp.CheckpointManager:
    """A synchronous ``CheckpointManager`` on ``workdir/checkpoints`` keeping the last ``keep``.

    Saves are synchronous (``save`` returns once the checkpoint is renamed into place), so that
    a line printed after ``save_checkpoint`` means the checkpoint is on disk. ``read_only``: a
    manager for readers (evaluation, sampling, ``load_score_fn``) that creates, removes and
    renames nothing, so it works on read-only media and beside a run that trains.
    """
    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                               save_interval_steps=0,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=False)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
    # a read-only manager logs "Given directory is read only" as a warning
    with _absl_quiet() if read_only else contextlib.nullcontext():
        return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


@contextlib.contextmanager
def _absl_quiet():
    from absl import logging
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _to_host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _leaf_name(path) -> str:
    """``params/Dense_0/kernel``: a leaf's path, the same for the saved ``TrainState`` and the
    nested dicts orbax restores without a target."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def digest(state, data: dict) -> dict:
    """SHA-256 of every array of ``state`` (its dtype, shape and bytes) and of the data state
    ``data``: ``{"arrays": {leaf name: hex}, "data": hex}``, saved with each checkpoint."""
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaf = np.ascontiguousarray(leaf)
        h = hashlib.sha256(f"{leaf.dtype.str}{leaf.shape}".encode())
        h.update(leaf.view(np.uint8) if leaf.size else b"")
        arrays[_leaf_name(path)] = h.hexdigest()
    text = json.dumps(data, sort_keys=True)
    return {"arrays": arrays, "data": hashlib.sha256(text.encode()).hexdigest()}


class CheckpointSaveError(WorkdirError, OSError):
    """A checkpoint could not be written (no space left, I/O error); the previous ones are
    intact."""


class NoCheckpointError(WorkdirError, FileNotFoundError):
    """A reader (eval, sample, ``load_score_fn``) found no checkpoint in the workdir."""


def save_checkpoint(manager: ocp.CheckpointManager, state, data_state: DataState) -> int:
    """Saves the (unreplicated) ``state``, ``data_state`` and their ``digest`` at step
    ``int(state.step)``.

    Raises:
      CheckpointSaveError: the save failed (a full disk, an I/O error): one line naming the
        directory, its free space and the newest checkpoint, which is intact (orbax writes into
        a temporary directory that the next start removes).
    """
    step = int(jax.device_get(state.step))
    host, data = _to_host(state), data_state.to_dict()
    try:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(host), data=ocp.args.JsonSave(data),
            digest=ocp.args.JsonSave(digest(host, data))), force=True)
        manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001 (orbax wraps OS errors in ValueError and others)
        raise CheckpointSaveError(_save_failure(manager, step, error)) from error
    return step


def _save_failure(manager, step: int, error: Exception) -> str:
    directory = os.fspath(manager.directory)
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or \
            "RESOURCE_EXHAUSTED" in text or "No space left" in text:
        what = "no space left on the device"
    else:
        what = (text.strip().splitlines() or [""])[0][:200]
    try:
        free = f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    manager.reload()
    newest = manager.latest_step()
    kept = "no earlier checkpoint" if newest is None else f"checkpoint {newest} is intact"
    return (f"could not save checkpoint {step} in {directory}: {what} ({free}); {kept}. Free "
            f"space (or fix the error) and run again to resume")


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint could not be restored or failed its digest; an older one is used."""


class DamagedCheckpointsError(WorkdirError, RuntimeError):
    """Every checkpoint of a workdir is damaged: the run refuses to start over silently."""


def damaged_checkpoints(workdir: str | os.PathLike) -> list[str]:
    """The checkpoints of ``workdir`` set aside as damaged (``<step>.damaged``...), sorted."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if ".damaged" in n)


def restore_checkpoint(manager: ocp.CheckpointManager, target, step: int | None = None,
                       read_only: bool = False):
    """The state (with ``target``'s structure and dtypes) and ``DataState`` of ``step`` (default:
    the newest intact checkpoint), or ``(None, None)`` when there is none.

    A checkpoint is intact when orbax restores it and every array and the data state match the
    digest saved with it (checkpoints written before digests were saved are restored
    unverified). Without ``step``, a damaged one (missing or truncated files, bit rot, bad
    metadata) is renamed to ``<step>.damaged`` (kept for inspection, no longer listed; with
    ``read_only`` it is left in place), a ``DamagedCheckpointWarning`` names it and the error,
    and the next older one is tried. With ``step``, its error is raised.
    """
    if step is not None:
        restored, problem = _read(manager, step)
        if problem is not None:
            raise ValueError(f"checkpoint {step} in {manager.directory} is damaged: {problem}")
        return _fit(manager, target, step, restored)
    for candidate in sorted(manager.all_steps(), reverse=True):
        restored, problem = _read(manager, candidate)
        if problem is None:
            return _fit(manager, target, candidate, restored)
        _set_aside(manager, candidate, problem, read_only)
    return None, None


def _read(manager, step: int) -> tuple[dict | None, str | None]:
    """Checkpoint ``step`` as saved (restored without a target, so that a changed config is not
    taken for damage) and ``None``, or ``None`` and what is wrong with it."""
    directory = os.path.join(os.fspath(manager.directory), str(step))
    # a checkpoint from before digests were saved is restored unverified
    present = ITEMS if os.path.isdir(os.path.join(directory, "digest")) else ITEMS[:2]
    args = {"state": ocp.args.StandardRestore(), "data": ocp.args.JsonRestore(),
            "digest": ocp.args.JsonRestore()}
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            **{n: args[n] for n in present}))
        if "digest" not in present:
            return restored, None
        saved, found = restored["digest"], digest(restored["state"], restored["data"])
    except Exception as error:  # noqa: BLE001 (orbax/tensorstore raise many kinds)
        return None, (f"{type(error).__name__}: "
                      f"{(str(error).strip().splitlines() or [''])[0][:300]}")
    if not isinstance(saved, dict) or not isinstance(saved.get("arrays"), dict):
        return None, "its digest file is not a digest"
    if saved.get("data") != found["data"]:
        return None, "its data state does not match its digest"
    wrong = sorted(k for k in saved["arrays"].keys() | found["arrays"].keys()
                   if saved["arrays"].get(k) != found["arrays"].get(k))
    if wrong:
        return None, (f"{len(wrong)} of {len(found['arrays'])} arrays do not match their "
                      f"digest (e.g. {', '.join(wrong[:3])})")
    return restored, None


def _set_aside(manager, step: int, problem: str, read_only: bool) -> None:
    path = os.path.join(os.fspath(manager.directory), str(step))
    if read_only:
        warnings.warn(f"checkpoint {path} is damaged ({problem}); trying the previous one",
                      DamagedCheckpointWarning, stacklevel=3)
        return
    aside, n = path + ".damaged", 1
    while os.path.exists(aside):
        n += 1
        aside = f"{path}.damaged-{n}"
    if jax.process_index() == 0:  # one process renames; every process falls back alike
        os.rename(path, aside)
    manager.reload()
    warnings.warn(f"checkpoint {path} is damaged ({problem}); moved to {aside}, trying the "
                  f"previous one", DamagedCheckpointWarning, stacklevel=3)


def _fit(manager, target, step: int, restored: dict):
    """The saved arrays in ``target``'s structure and dtypes, matched by leaf name, and the
    ``DataState``; a ValueError naming the arrays when they do not fit (a changed config)."""
    saved = {_leaf_name(path): leaf for path, leaf
             in jax.tree_util.tree_flatten_with_path(restored["state"])[0]}
    pairs = [(_leaf_name(path), t) for path, t in jax.tree_util.tree_flatten_with_path(target)[0]]
    wrong = [f"{name}: saved {np.shape(saved[name]) if name in saved else 'nothing'}, config "
             f"{np.shape(t)}" for name, t in pairs
             if name not in saved or np.shape(saved[name]) != np.shape(t)]
    wrong += [f"{name}: saved {np.shape(saved[name])}, not in this config" for name in
              saved.keys() - {name for name, _ in pairs}]
    if wrong:
        raise ConfigMismatchError(
            f"checkpoint {step} in {manager.directory} does not fit this config's train state "
            f"(a changed model or optimizer?): {len(wrong)} arrays differ, e.g. "
            f"{'; '.join(wrong[:3])}")
    leaves = [np.asarray(saved[name], dtype=np.asarray(t).dtype) for name, t in pairs]
    state = jax.tree.unflatten(jax.tree.structure(target), leaves)
    return state, DataState.from_dict(restored["data"])
