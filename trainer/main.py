"""Launcher: ``python -m trainer.main --config experiments/configs/gmm_mlp.py --workdir DIR``.

``--config`` may be left out for a workdir that has a ``config.json`` (its own config, which
``--config.*`` overrides change). ``--mode train`` (default) trains, resuming from the newest
intact checkpoint in
``DIR/checkpoints``, and evaluates at the end (SIGTERM or Ctrl-C: the step finishes, a checkpoint
is saved, exit 143 or 130); ``--mode eval`` evaluates and ``--mode sample`` samples the EMA
parameters of the newest intact checkpoint, writing nothing into ``DIR`` but what ``--out``
says. Config fields are overridden as ``--config.training.num_train_steps=100``
or, for the shortcuts of ``trainer/base.py``, as
``--config experiments/configs/gmm_mlp.py:sde=ve,sampler=pf_ode_heun``. Across hosts, run the same
command on every process with ``--config.distributed.coordinator_address=HOST:PORT``,
``--config.distributed.num_processes=P`` and ``--config.distributed.process_id=p`` (or the
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` environment variables).
"""

from absl import flags, logging

from trainer import cli
from trainer.evaluation import evaluate_workdir, sample_workdir
from trainer.loop import train_and_evaluate

FLAGS = flags.FLAGS
cli.define_flags(config_help=(
    "Configuration file: one of experiments/configs (see the list below), optionally with "
    "shortcuts, FILE:sde=ve,steps=1000. Left out, the workdir's own config.json (eval, sample, "
    "and resuming a training need only --workdir)."))
flags.adopt_module_key_flags(cli)  # listed by --help
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"],
                  "What to run: train (resuming from the workdir's newest intact checkpoint) "
                  "and evaluate, evaluate the newest checkpoint's EMA, or sample from it.")
flags.DEFINE_bool("restart", False, "--mode train: start over from step 0 when every "
                  "checkpoint of the workdir is damaged (they stay aside as <step>.damaged; "
                  "the run's metrics are overwritten). Without it such a workdir is refused.")
flags.DEFINE_string("out", None, "--mode eval: a directory for eval_<step>.json and the "
                    "sample grid (default: nothing is written, the metrics are printed); "
                    "--mode sample: a .png (grid or scatter plot), .npy or .npz file, or a "
                    "directory for both (default: <workdir>/samples). Readers write nothing "
                    "else, so a read-only workdir can be evaluated.")
flags.DEFINE_integer("num_samples", None, "--mode sample: how many samples (default: the "
                     "config's eval.num_samples).", lower_bound=1)

MODES = {"train": train_and_evaluate, "eval": evaluate_workdir, "sample": sample_workdir}
UNITS = {"test_loss": "the config's loss, per example", "bits_per_dim": "bits/dim",
         "nll_bits_per_dim": "bits/dim", "true_nll_bits_per_dim": "bits/dim (the exact law)",
         "bits_per_dim_se": "bits/dim, standard error over the likelihood's examples",
         "nll_bits_per_dim_se": "bits/dim, standard error over the likelihood's examples",
         "sample_nfe": "score evaluations per sample"}


def main(argv):
    del argv  # parse_flags refuses positional arguments
    logging.set_verbosity(logging.WARNING)  # orbax's and absl's INFO lines off the console
    config = FLAGS.config
    if FLAGS.num_samples is not None:
        if FLAGS.mode != "sample":
            cli.fail(f"--num_samples={FLAGS.num_samples} is for --mode=sample, not "
                     f"--mode={FLAGS.mode}")
        with config.unlocked():
            config.eval.num_samples = FLAGS.num_samples
    for name, modes in (("restart", ("train",)), ("out", ("eval", "sample"))):
        if FLAGS[name].present and FLAGS.mode not in modes:
            cli.fail(f"--{name} is for --mode={' or --mode='.join(modes)}, not "
                     f"--mode={FLAGS.mode}")
    cli.check_config(config)  # a bad config: one line and exit status 2, before any work
    options = {"restart": FLAGS.restart} if FLAGS.mode == "train" else {"out": FLAGS.out}
    result = cli.run_or_exit(MODES[FLAGS.mode], config, FLAGS.workdir, **options)
    if FLAGS.mode == "sample":
        x, written = result
        print(f"{x.shape[0]} samples of shape {x.shape[1:]}; wrote:", flush=True)
    else:
        metrics = result["eval"] if FLAGS.mode == "train" else result
        written = result["written"] if FLAGS.mode == "train" else result.written
        print("\n".join(f"{k:>22} = {v:.6g}" + (f"  ({UNITS[k]})" if k in UNITS else "")
                        for k, v in metrics.items()))
        print("wrote:" if written else "wrote nothing (--out DIR to keep the evaluation)",
              flush=True)
    for path in written:
        print(f"  {path}", flush=True)


def epilog() -> str:
    """The shipped configs and the sections of a config, after ``--help``."""
    import os

    from trainer.config import SECTION_TYPES
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments", "configs")
    names = sorted(n for n in os.listdir(configs) if n.endswith(".py") and n[0] != "_"
                   and n != "base.py") if os.path.isdir(configs) else []
    return (f"\nShipped configs (experiments/configs/): {', '.join(names)}\nConfig sections "
            f"(--config.<section>.<field>=value; docs/training.md lists the fields): "
            f"{', '.join(sorted(SECTION_TYPES))}")


def run(argv=None) -> None:
    """The command line: ``python -m trainer.main`` (and the ``ddpm-sde`` script)."""
    cli.app_run(main, argv, epilog=epilog, workdir_config=True)


if __name__ == "__main__":
    run()
