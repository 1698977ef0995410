"""One run's objects, built from a checked config: devices, SDE, model, loss, optimizer, data
iterators, the workdir's lock and checkpoint manager, and the batches read one call ahead."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import models
import sde_lib
from trainer import checkpointing, workdirs
from trainer.config import ExperimentConfig, check_devices, distributed_config, parse_config
from trainer.data import create_iterators
from trainer.state import create_optimizer, create_train_state
from trainer.step import AXIS, make_eval_step


def initialize_distributed(config) -> None:
    """``jax.distributed.initialize`` when a coordinator is configured (the ``distributed``
    section of ``config``, or the environment).

    Runs first, before the config is checked (checking builds the SDE, which touches the
    backend, and ``jax.distributed.initialize`` must come before any backend use); on CPU,
    collectives across processes use gloo.
    """
    dist = distributed_config(config).resolved()
    if dist.coordinator_address is None or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)


class ConfigChangeWarning(UserWarning):
    """A run resumes with config fields changed that do not change the model, its data or its
    objective (steps, intervals, learning rate, evaluation)."""


class Run:
    """The objects of one run, built from a checked config (devices, data, model, steps)."""

    def __init__(self, cfg: ExperimentConfig, workdir: str, reading: bool = False):
        # reading: evaluate_workdir, sample_workdir or load_score_fn (config.json is left as is)
        self.cfg, self.workdir, self.reading = cfg, os.fspath(workdir), reading
        self.is_main = jax.process_index() == 0
        # where evaluations and samples are written: the workdir when training; a reader's
        # ``out`` (None: nothing is written)
        self.out_dir: str | None = None if reading else self.workdir
        self.written: list[str] = []  # the files this run wrote, in order (once each)
        self.num_devices = check_devices(cfg)
        # pmap spans the first num_devices devices of every process (the same list everywhere)
        self.pmap_devices = [d for p in range(jax.process_count())
                             for d in sorted((d for d in jax.devices() if d.process_index == p),
                                             key=lambda d: d.id)[:self.num_devices]]
        self.devices = [d for d in self.pmap_devices if d.process_index == jax.process_index()]
        self.sde = cfg.sde.build()
        self.model = models.get_model(cfg.model)
        self.loss_fn = sde_lib.get_loss_fn(self.sde, cfg.loss)
        self.optimizer, self.schedule = create_optimizer(cfg.optim)
        self.train_it, self.eval_it = create_iterators(
            cfg.data, cfg.training.batch_size, cfg.eval.batch_size, num_devices=self.num_devices)
        self.data_shape = self.train_it.dataset.data_shape
        self.state = create_train_state(jax.random.PRNGKey(cfg.training.seed), self.model,
                                        self.data_shape, self.optimizer)
        # a writer takes the lock before the manager, whose creation removes unfinished saves;
        # readers take none and read through a manager that writes nothing
        self.lock = workdirs.WorkdirLock(self.workdir)
        if not reading:
            self.lock.acquire()
        try:
            self.manager = checkpointing.create_manager(
                self.workdir, cfg.training.keep_checkpoints, read_only=reading)
            self.config_changes = workdirs.check_config(
                self.workdir, dataclasses.asdict(cfg), self.manager.latest_step() is not None)
        except BaseException:
            self.lock.release()
            raise
        for change in [] if reading else self.config_changes:  # a reader's own choices
            warnings.warn(f"resuming {self.workdir} with a changed config field: {change}",
                          ConfigChangeWarning, stacklevel=3)

    @property
    def label(self) -> str:
        """What this run trains, for progress lines: ``gaussian_pair d=16 seed=2``."""
        shape = self.data_shape
        what = f"d={shape[0]}" if len(shape) == 1 else "x".join(map(str, shape))
        return f"{self.cfg.data.name} {what} seed={self.cfg.training.seed}"

    def wrote(self, path: str) -> str:
        """Records ``path`` among the files this run wrote; returns it."""
        if path not in self.written:
            self.written.append(path)
        return path

    def say(self, line: str) -> None:
        """``line`` on stderr, prefixed with the run's label (process 0)."""
        if self.is_main:
            _say(f"{self.label}: {line}")

    @contextlib.contextmanager
    def progress(self, what: str):
        """A line on stderr before and after a phase that can take a while (process 0)."""
        start = time.perf_counter()
        self.say(f"{what} ...")
        yield
        self.say(f"{what}: done in {time.perf_counter() - start:.1f} s")

    # the evaluation's compiled functions, built once per run (params are arguments)
    @functools.cached_property
    def eval_step(self):
        return jax.pmap(make_eval_step(self.model, self.loss_fn,
                                       rng_block_size=self.cfg.training.rng_block_size),
                        AXIS,
                        devices=self.pmap_devices)

    def score_fn(self, params):
        return models.get_score_fn(self.sde, self.model, params, self.cfg.loss.parameterization)

    @functools.cached_property
    def log_likelihood(self):
        ev = self.cfg.eval
        return jax.jit(lambda params, rng, x: sde_lib.log_likelihood(
            rng, self.sde, self.score_fn(params), x, ev.likelihood_eps, ev.divergence, ev.rtol,
            ev.atol, num_probes=ev.num_probes))

    @functools.cached_property
    def draw(self):
        """``draw(params, rng) -> (x, nfe)``: ``eval.num_samples`` samples of the config's
        sampler."""
        sp, shape = self.cfg.sampling, (self.cfg.eval.num_samples, *self.data_shape)
        return jax.jit(lambda params, rng: sde_lib.sample(
            rng, self.sde, self.score_fn(params), shape, sp.method, sp.num_steps, sp.eps,
            **sp.options))

    def restore(self, required: bool = False, restart: bool = False) -> bool:
        """Restores the newest intact checkpoint (if any), then (when training) saves the config
        beside it.

        Raises:
          checkpointing.DamagedCheckpointsError: the workdir had checkpoints and every one is
            damaged (a writer starts over from step 0 only with ``restart``).
          checkpointing.NoCheckpointError: ``required`` and the workdir has no checkpoint.
        """
        listed = self.manager.all_steps()
        with (self.progress(f"restoring checkpoint {max(listed)} from "
                            f"{checkpointing.checkpoint_dir(self.workdir)}") if listed
              else contextlib.nullcontext()):
            state, data_state = checkpointing.restore_checkpoint(self.manager, self.state,
                                                                 read_only=self.reading)
        if state is None:
            self._no_checkpoint(listed, required, restart)
        if not self.reading:
            workdirs.save_config(self.workdir, dataclasses.asdict(self.cfg))
        if state is None:
            return False
        self.state = jax.tree.map(jnp.asarray, state)
        self.train_it.restore(data_state)
        return True

    def _no_checkpoint(self, listed, required: bool, restart: bool) -> None:
        directory = checkpointing.checkpoint_dir(self.workdir)
        damaged = [str(s) for s in listed] if self.reading else [
            os.path.basename(p) for p in checkpointing.damaged_checkpoints(self.workdir)]
        if damaged and not (restart and not self.reading):
            what = ("start over from step 0 with --restart (trainer.main) or restart=True "
                    "(the damaged ones stay aside; the run's metrics are overwritten)")
            raise checkpointing.DamagedCheckpointsError(
                f"every checkpoint in {directory} is damaged ({', '.join(damaged)}); nothing "
                f"was overwritten. Inspect them, restore them from a copy, or "
                f"{'train again' if self.reading else what}")
        if required:
            raise checkpointing.NoCheckpointError(f"no checkpoint in {directory}")

    def index(self, it) -> np.ndarray:
        """Global positions ``(D, b)`` of this process's examples in a batch of ``it``."""
        share = it.global_batch_size // it.process_count
        start = it.process_index * share
        return np.arange(start, start + share).reshape(self.num_devices, -1)

    def next_batches(self, num_calls: int):
        """The training batches of ``num_calls`` calls, each on this process's devices with the
        data state after it (what a checkpoint taken after that call records), read one call
        ahead: the next call's batch is read and transferred (``jax.device_put``, which
        returns at once) while the current call runs, as flax's ``prefetch_to_device``."""
        mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))

        def read():
            return jax.device_put(self.next_batch(), sharding), self.train_it.state

        ahead = read() if num_calls > 0 else None
        for call in range(num_calls):
            current, ahead = ahead, (read() if call + 1 < num_calls else None)
            yield current

    def next_batch(self) -> dict:
        K = self.cfg.training.steps_per_call
        index = self.index(self.train_it)
        batches = [{"x": next(self.train_it)["x"], "index": index} for _ in range(K)]
        if K == 1:
            return batches[0]
        return jax.tree.map(lambda *a: np.stack(a, axis=1), *batches)


def _say(line: str) -> None:
    from tqdm import tqdm
    tqdm.write(line, file=sys.stderr)  # above a progress bar, if one is shown
    sys.stderr.flush()


def unreplicate(tree):
    """Device 0's copy of each leaf of a ``pmap`` output (``flax.jax_utils.unreplicate`` keeps
    the device axis when one device is used out of several)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)


def open_for_reading(config, workdir: str) -> Run:
    """The run of ``workdir``'s newest intact checkpoint, restored for reading (eval, sample,
    ``load_score_fn``).

    A reader takes no lock and writes nothing into ``workdir``: several may read at once, while
    a run trains there (a checkpoint being saved is not listed until complete) or from
    read-only media; a damaged checkpoint is skipped with a warning and left in place.
    """
    if not os.path.isdir(checkpointing.checkpoint_dir(workdir)):
        raise checkpointing.NoCheckpointError(
            f"no checkpoint in {checkpointing.checkpoint_dir(workdir)} (is {workdir} a "
            f"training workdir?)")
    initialize_distributed(config)
    run = Run(parse_config(config), workdir, reading=True)
    run.restore(required=True)
    return run
