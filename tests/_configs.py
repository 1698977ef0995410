"""Tiny versions of the experiment modules' configs: the trainer sections shrunk so that a model
trains in about a second, the experiment section set by each test."""

from experiments.configs import base

# the MLP of experiments/configs/mixture_mlp.py, shrunk: 20 steps in 2 compiled calls
TINY_MLP = {
    "data.num_train": 2048, "data.num_test": 256, "model.hidden": 32, "model.num_blocks": 1,
    "training.batch_size": 64, "training.num_train_steps": 20, "training.steps_per_call": 10,
    "training.log_every": 10, "training.eval_every": 20, "training.sample_every": 20,
    "training.checkpoint_every": 20, "optim.warmup_steps": 2, "eval.batch_size": 64,
    "eval.num_samples": 16, "sampling.num_steps": 10,
}


def tiny(module_config, experiment=None, mlp=True, **fields):
    """``module_config.get_config()`` with ``TINY_MLP`` (if ``mlp``), ``fields`` (dotted) and
    the ``experiment`` section's fields ``experiment`` set."""
    config = module_config.get_config()
    values = dict(TINY_MLP) if mlp else {}
    values.update(fields)
    values.update({f"experiment.{k}": v for k, v in (experiment or {}).items()})
    return base.override(config, values)
