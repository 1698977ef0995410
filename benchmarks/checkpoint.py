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


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(name: str, rounds: int, root: str) -> dict[str, float]:
    state = _state(*CASES[name])
    data = DataState(0, 1)
    nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
    times = {k: [] for k in ("save", "save_bare", "restore", "restore_bare", "digest")}
    for r in range(rounds):
        with_dir, bare_dir = os.path.join(root, f"{name}{r}a"), os.path.join(root, f"{name}{r}b")
        manager = checkpointing.create_manager(with_dir)
        bare = checkpointing.create_manager(bare_dir)
        state_r = state.replace(step=np.int32(r + 1))
        times["save"].append(_time(lambda: checkpointing.save_checkpoint(manager, state_r,
                                                                         data)))
        times["save_bare"].append(_time(lambda: (bare.save(r + 1, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_r), data=ocp.args.JsonSave(data.to_dict()))),
            bare.wait_until_finished())))
        times["restore"].append(_time(lambda: checkpointing.restore_checkpoint(manager,
                                                                               state_r)))
        times["restore_bare"].append(_time(lambda: bare.restore(r + 1, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))))
        times["digest"].append(_time(lambda: checkpointing.digest(state_r, data.to_dict())))
        shutil.rmtree(with_dir)
        shutil.rmtree(bare_dir)
    med = {k: float(np.median(v)) for k, v in times.items()}
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
