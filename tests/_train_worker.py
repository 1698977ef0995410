"""Subprocess helper of tests/test_train.py: trains a tiny config and saves the final state.

``python tests/_train_worker.py OUT.npz WORKDIR DEVICES CONFIG_JSON [COORD NUM_PROC PROC_ID]``

``CONFIG_JSON`` maps dotted config fields to values, plus ``"config"`` (a file of
``experiments/configs``) and ``"sleep_after_checkpoint"`` (seconds to wait after each checkpoint,
after printing ``CHECKPOINT <step>``, so that the parent can kill or signal the process there)
and ``"hang_in_save_at"`` (a step: the save of that checkpoint stops, its files half written in
orbax's temporary directory, after printing ``SAVING <step>``, for the parent to kill it). A
run stopped by SIGTERM or SIGINT exits as ``trainer.main`` does (one line, code 128 + signal).
"""

import json
import os
import sys
import time

OUT, WORKDIR, DEVICES, SPEC = sys.argv[1:5]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={int(DEVICES)}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import importlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import trainer  # noqa: E402


def _hang_in_save(step):
    """Makes the save of checkpoint ``step`` stop before orbax renames its temporary directory."""
    from orbax.checkpoint._src.path import async_path

    from trainer import checkpointing

    rename, save = async_path.rename, checkpointing.save_checkpoint
    saving = []

    async def hanging_rename(src, dst):
        if saving:
            print(f"SAVING {saving[0]}", flush=True)
            time.sleep(600)
        return await rename(src, dst)

    def save_checkpoint(manager, state, data_state):
        if int(jax.device_get(state.step)) == step:
            saving.append(step)
        return save(manager, state, data_state)

    async_path.rename = hanging_rename
    checkpointing.save_checkpoint = save_checkpoint


def main():
    spec = json.loads(SPEC)
    config = importlib.import_module(f"experiments.configs.{spec.pop('config')}").get_config()
    sleep = spec.pop("sleep_after_checkpoint", 0.0)
    hang_at = spec.pop("hang_in_save_at", None)
    if hang_at is not None:
        _hang_in_save(hang_at)
    for path, value in spec.items():
        *parents, leaf = path.split(".")
        section = config
        for name in parents:
            section = section[name]
        section[leaf] = tuple(value) if isinstance(value, list) else value
    if len(sys.argv) > 5:
        coord, num, pid = sys.argv[5:8]
        config.distributed.coordinator_address = coord
        config.distributed.num_processes = int(num)
        config.distributed.process_id = int(pid)

    def on_checkpoint(step):
        print(f"CHECKPOINT {step}", flush=True)
        time.sleep(sleep)

    try:
        out = trainer.train_and_evaluate(config, WORKDIR, on_checkpoint=on_checkpoint)
    except trainer.Preempted as stop:  # as trainer.main: one line, the signal's exit code
        print(f"error: {stop}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    leaves = jax.tree.leaves(jax.device_get(out["state"]))
    if jax.process_index() == 0:
        arrays = {f"arr_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        np.savez(OUT, train_loss=out["train_loss"], process_count=jax.process_count(), **arrays)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
