"""One run's objects, built from a checked config: devices, SDE, model, loss, optimizer, data
iterators, the workdir's lock and checkpoint manager, and the batches read one call ahead."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import models
import sde_lib
from trainer import checkpointing
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
        # the lock before the manager, whose creation removes unfinished saves in the workdir
        self.lock = checkpointing.WorkdirLock(self.workdir).acquire()
        try:
            self.manager = checkpointing.create_manager(self.workdir,
                                                        cfg.training.keep_checkpoints)
            self.config_changes = checkpointing.check_config(
                self.workdir, dataclasses.asdict(cfg), self.manager.latest_step() is not None)
        except BaseException:
            self.lock.release()
            raise
        for change in self.config_changes:
            verb = "reading" if reading else "resuming"
            warnings.warn(f"{verb} {self.workdir} with a changed config field: {change}",
                          ConfigChangeWarning, stacklevel=3)
        self.is_main = jax.process_index() == 0

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
            ev.atol))

    @functools.cached_property
    def draw(self):
        """``draw(params, rng) -> (x, nfe)``: ``eval.num_samples`` samples of the config's
        sampler."""
        sp, shape = self.cfg.sampling, (self.cfg.eval.num_samples, *self.data_shape)
        return jax.jit(lambda params, rng: sde_lib.sample(
            rng, self.sde, self.score_fn(params), shape, sp.method, sp.num_steps, sp.eps,
            **sp.options))

    def restore(self, required: bool = False) -> bool:
        """Restores the newest intact checkpoint (if any), then (when training) saves the config
        beside it."""
        state, data_state = checkpointing.restore_checkpoint(self.manager, self.state)
        if state is None and required:
            raise FileNotFoundError(
                f"no checkpoint in {checkpointing.checkpoint_dir(self.workdir)}")
        if not self.reading:
            checkpointing.save_config(self.workdir, dataclasses.asdict(self.cfg))
        if state is None:
            return False
        self.state = jax.tree.map(jnp.asarray, state)
        self.train_it.restore(data_state)
        return True

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


def unreplicate(tree):
    """Device 0's copy of each leaf of a ``pmap`` output (``flax.jax_utils.unreplicate`` keeps
    the device axis when one device is used out of several)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)


@contextlib.contextmanager
def open_for_reading(config, workdir: str):
    """The run of ``workdir``'s latest checkpoint, restored for reading (eval, sample,
    ``load_score_fn``), its lock held inside the block."""
    initialize_distributed(config)
    run = Run(parse_config(config), workdir, reading=True)
    try:
        run.restore(required=True)
        yield run
    finally:
        run.lock.release()
