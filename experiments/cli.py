"""The command line shared by the trainer and every experiment module.

``python -m experiments.<module> --workdir DIR [--config FILE[:key=value,...]]
[--config.section.field=value ...]``: the same two flags as ``experiments.main``. ``--config`` is
an ml_collections file of ``experiments/configs`` and defaults to the module's own file
(``experiments/configs/<module>.py``); the module's settings are its ``experiment`` section
(``--config.experiment.num_samples=500``), the model behind it is the rest of the file, trained
by ``experiments.train``. ``run(config, workdir)`` returns the paths it wrote; the markdown tables
are printed, then the paths and the time taken.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def config_file(name: str) -> str:
    """The path of ``experiments/configs/<name>.py``."""
    return os.path.join(CONFIG_DIR, f"{name}.py")


def define_flags(default_config: str | None = None) -> None:
    """``--workdir`` (required) and ``--config`` (required unless ``default_config``)."""
    flags.DEFINE_string("workdir", None, "Directory for the results (and the trained models).")
    config_flags.DEFINE_config_file("config", default_config, "Configuration file.",
                                    lock_config=True)
    flags.mark_flags_as_required(["workdir"] + ([] if default_config else ["config"]))


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def _unknown_field(error: Exception, argv) -> None:
    """Exits with status 2 and one line naming the unknown ``--config.<field>`` of ``argv`` and
    ml_collections' suggestion, instead of its traceback."""
    inner = error.args[0] if error.args else error
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    key, _, hint = str(text).partition("\n")
    key = key.strip("'\"")
    where = [a for a in argv[1:] if a.startswith("--config.") and key in a]
    sys.stderr.write(f"error: unknown config field {key!r}"
                     f"{' in ' + where[0].split('=')[0] if where else ''}"
                     f"{'; ' + hint if hint else ''}\n")
    sys.exit(2)


def _parse_flags(argv):
    """absl's flag parsing, with a one-line error for an unknown ``--config.<field>``."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as error:
        _unknown_field(error, argv)


def app_run(main: Callable, argv=None) -> None:
    """``absl.app.run(main)``, exiting 0 (not absl's 1) after printing the help, and with a
    one-line error for an unknown ``--config.<field>``."""
    args = sys.argv if argv is None else argv
    try:
        app.run(main, argv, flags_parser=_parse_flags)
    except SystemExit as done:
        if done.code == 1 and any(a in HELP_FLAGS for a in args[1:]):
            raise SystemExit(0) from None
        raise


def report(paths: dict[str, str], seconds: float) -> None:
    """Prints the markdown tables of ``paths``, then every path and the time taken."""
    for name, path in paths.items():
        if name.endswith(".md"):
            with open(path) as f:
                print(f"{name}:\n{f.read()}")
    print(f"done in {seconds:.0f} s; wrote:")
    for path in paths.values():
        print(f"  {path}")


def run_main(run: Callable, module: str, argv=None) -> None:
    """Defines the flags with ``experiments/configs/<module>.py`` as the default config and runs
    ``run(FLAGS.config, FLAGS.workdir)`` under ``absl.app``."""
    try:  # the default config file is parsed, with the overrides, here
        define_flags(config_file(module))
    except (AttributeError, KeyError) as error:
        _unknown_field(error, sys.argv if argv is None else argv)
    for name in ("workdir", "config"):  # listed by --help, under the module run
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])

    def main(args):
        if len(args) > 1:
            raise app.UsageError(f"Too many command-line arguments: {args[1:]}")
        logging.set_verbosity(logging.WARNING)
        start = time.perf_counter()
        paths = run(FLAGS.config, FLAGS.workdir)
        report(paths, time.perf_counter() - start)

    app_run(main, argv)
