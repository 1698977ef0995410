"""The cost of checkpoint digests: a save and a restore with the SHA-256 digest of every array
(``trainer.checkpointing``) against the same save and restore without it, side by side.

For each case (the residual MLP of ``gmm_mlp``, the digits U-Net, the DDPM CIFAR-10 U-Net: the
train state of each config, parameters, Adam moments and the EMA), ``--rounds`` interleaved
rounds each time:

* ``save``: ``checkpointing.save_checkpoint`` (orbax, synchronous, with the digest) against
  ``manager.save`` of the state and data items alone;
* ``restore``: ``checkpointing.restore_checkpoint`` (reads, checks every digest, fits the target)
  against orbax's restore of the same items without the check;
* ``digest``: ``checkpointing.digest`` alone.

The median over rounds and the ratio with / without are printed. Run:
``python -m benchmarks.checkpoint [--cases mlp unet cifar10] [--rounds 5]``; results go in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

import models
import trainer
from experiments.configs import cifar10, digits_unet, gmm_mlp
from trainer import checkpointing
from trainer.data import DataState

CASES = {"mlp": (gmm_mlp, (16,)), "unet": (digits_unet, (8, 8, 1)),
         "cifar10": (cifar10, (32, 32, 3))}


def _state(module, shape):
    cfg = trainer.parse_config(module.get_config())
    optimizer, _ = trainer.create_optimizer(cfg.optim)
    state = trainer.create_train_state(jax.random.PRNGKey(0), models.get_model(cfg.model), shape,
                                       optimizer)
    return jax.tree.map(np.asarray, jax.device_get(state))


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _save_bare(manager, step, state, data):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=ocp.args.JsonSave(data.to_dict())))
    manager.wait_until_finished()


def _restore_bare(manager, step):
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                         data=ocp.args.JsonRestore()))


def one_round(state, data, root: str) -> dict[str, float]:
    """The five times of one round, in seconds (the directories are removed after)."""
    with_dir, bare_dir = os.path.join(root, "with"), os.path.join(root, "bare")
    manager, bare = (checkpointing.create_manager(d) for d in (with_dir, bare_dir))
    step = int(state.step)
    times = {"save": _timed(checkpointing.save_checkpoint, manager, state, data),
             "save_bare": _timed(_save_bare, bare, step, state, data),
             "restore": _timed(checkpointing.restore_checkpoint, manager, state),
             "restore_bare": _timed(_restore_bare, bare, step),
             "digest": _timed(checkpointing.digest, state, data.to_dict())}
    shutil.rmtree(with_dir)
    shutil.rmtree(bare_dir)
    return times


def run_case(name: str, rounds: int, root: str) -> dict[str, float]:
    state = _state(*CASES[name])
    data = DataState(0, 1)
    nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
    times = [one_round(state.replace(step=np.int32(r + 1)), data, root) for r in range(rounds)]
    med = {k: float(np.median([t[k] for t in times])) for k in times[0]}
    print(f"{name}: {nbytes / 2**20:.1f} MiB of arrays; median of {rounds} rounds (ms): "
          f"save {1e3 * med['save']:.1f} / without digest {1e3 * med['save_bare']:.1f} "
          f"(ratio {med['save'] / med['save_bare']:.3f}); restore {1e3 * med['restore']:.1f} / "
          f"without check {1e3 * med['restore_bare']:.1f} "
          f"(ratio {med['restore'] / med['restore_bare']:.3f}); digest alone "
          f"{1e3 * med['digest']:.1f} ({nbytes / med['digest'] / 2**20:.0f} MiB/s)", flush=True)
    return med


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["mlp", "unet", "cifar10"],
                        choices=sorted(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_checkpoint_")
    try:
        for name in args.cases:
            run_case(name, args.rounds, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
