"""How any model is trained and read back: typed config, command line, train state, the pmap'd
step, the run loop, evaluation, checkpoints, data and metrics.

The names that studies (``experiments``) and ``benchmarks`` use are exported here.
"""

from trainer import (
    base,
    checkpointing,
    cli,
    config,
    data,
    digits_builder,
    evaluation,
    loop,
    metrics,
    mnist_builder,
    preemption,
    reporting,
    run,
    state,
    step,
    workdirs,
)
from trainer.base import get_base_config, override
from trainer.config import (
    ExperimentConfig,
    check_devices,
    default_section,
    experiment_config,
    parse_config,
    validate_config,
)
from trainer.evaluation import (
    draw_samples,
    evaluate_params,
    evaluate_workdir,
    load_score_fn,
    sample_workdir,
    saved_config,
)
from trainer.loop import train_and_evaluate
from trainer.metrics import MetricsRepairWarning
from trainer.preemption import Preempted
from trainer.run import ConfigChangeWarning, Run, initialize_distributed
from trainer.state import TrainState, create_optimizer, create_train_state, ema_decay
from trainer.step import (
    AXIS,
    example_losses,
    make_eval_step,
    make_train_step,
    scan_unroll,
    uses_convolution,
    uses_dropout,
)

__all__ = [
    "AXIS", "ConfigChangeWarning", "ExperimentConfig", "MetricsRepairWarning", "Run",
    "TrainState", "base",
    "check_devices", "checkpointing", "cli", "config", "create_optimizer", "create_train_state",
    "data", "default_section", "digits_builder", "draw_samples", "ema_decay", "evaluate_params",
    "mnist_builder",
    "evaluate_workdir", "evaluation", "example_losses", "experiment_config", "get_base_config",
    "initialize_distributed", "load_score_fn", "loop", "make_eval_step", "make_train_step",
    "metrics", "override", "parse_config", "Preempted", "preemption", "reporting", "run",
    "sample_workdir", "saved_config", "scan_unroll", "state", "step", "train_and_evaluate",
    "uses_convolution", "uses_dropout", "validate_config", "workdirs",
]
