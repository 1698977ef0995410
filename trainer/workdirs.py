"""A training workdir's lock, its ``config.json`` and the errors of a workdir that does not
allow what was asked (the checkpoints themselves are ``trainer.checkpointing``'s)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings

import jax


class WorkdirError(Exception):
    """What a workdir does not allow, said in one line (``trainer.main`` and the studies print
    it as ``error: <message>`` and exit with status 1): the subclasses below."""


class ConfigMismatchError(WorkdirError, ValueError):
    """The config does not fit the workdir's checkpoints (a changed model, data or objective)."""


class WorkdirInUseError(WorkdirError, RuntimeError):
    """Another run holds the workdir's lock."""


class WorkdirLock:
    """An exclusive lock on a training workdir: the file ``<workdir>/train.lock`` holding the
    holder's PID and host, created atomically (``O_CREAT | O_EXCL``) and removed on release.

    A second run into the same workdir is refused with a ``WorkdirInUseError`` naming the
    holder. A
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
                raise WorkdirInUseError(
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


# the sections a saved config has (those of FIXED_FIELDS): without them a comparison is vacuous
CONFIG_SECTIONS = tuple(sorted({f.split(".")[0] for f in FIXED_FIELDS if "." in f}))


class DamagedConfigError(WorkdirError, ValueError):
    """A workdir's ``config.json`` cannot be read or is not a config (``read_config``)."""


def read_config(path: str | os.PathLike, remedy: str) -> dict:
    """The config saved at ``path`` by ``save_config``, as nested dicts.

    Args:
      path: a ``config.json``.
      remedy: what to do about a damaged one, the end of the error message.

    Raises:
      DamagedConfigError: (a ``ValueError``) one line naming ``path``, what is wrong (not UTF-8
        text, empty, not JSON, or not a config: a JSON object with the sections
        ``CONFIG_SECTIONS``, each an object) and ``remedy``.
    """
    with open(path, "rb") as f:
        raw = f.read()
    record, problem = None, None
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        problem = f"is not text (byte {error.start} is not UTF-8)"
    except json.JSONDecodeError as error:
        problem = ("is empty" if not raw.strip() else
                   f"is not valid JSON ({error.msg}: line {error.lineno} column {error.colno})")
    if problem is None and not isinstance(record, dict):
        problem = (f"is not a config (a JSON {type(record).__name__}, where a saved config is "
                   f"an object with the sections {', '.join(CONFIG_SECTIONS)})")
    if problem is None:
        missing = [s for s in CONFIG_SECTIONS if s not in record]
        other = [s for s in CONFIG_SECTIONS if s in record and not isinstance(record[s], dict)]
        wrong = ([f"missing the section{'s' * (len(missing) > 1)} {', '.join(missing)}"]
                 if missing else []) + [f"{s} is not an object" for s in other]
        if wrong:
            problem = f"is not a config ({'; '.join(wrong)})"
    if problem is not None:
        raise DamagedConfigError(f"{path} {problem}: {remedy}")
    return record


def check_config(workdir: str | os.PathLike, config: dict, has_checkpoint: bool) -> list[str]:
    """Compares the resolved ``config`` (nested dicts) with the one saved in
    ``<workdir>/config.json`` (by ``save_config``) when the workdir has checkpoints.

    Returns:
      the changed fields that are safe to resume with (``"training.num_train_steps: 300 ->
      600"``, any field outside ``FIXED_FIELDS``: step counts, intervals, learning rate,
      evaluation and sampling settings).

    Raises:
      ConfigMismatchError: (a ``ValueError``) a changed field of ``FIXED_FIELDS`` (model
        shapes, data and its stream, loss, SDE, batch size, seed), naming each with its old and
        new value.
      DamagedConfigError: a ``config.json`` that cannot be compared (``read_config``). Nothing
        is written.
    """
    path = os.path.join(os.path.abspath(os.fspath(workdir)), "config.json")
    new = json.loads(json.dumps(config, default=str, sort_keys=True))
    changes = []
    if has_checkpoint and os.path.exists(path):
        old = read_config(path, "restore it, or delete it to use the config given (the "
                                "checkpoints then decide the shapes: a config that does not "
                                "fit them is still refused)")
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
            raise ConfigMismatchError(
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

