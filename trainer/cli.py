"""The command line shared by the trainer (``trainer.main``) and every study.

``python -m experiments.<module> --workdir DIR [--config FILE[:key=value,...]]
[--config.section.field=value ...]``: the same two flags as ``trainer.main``. ``--config`` is an
ml_collections file of ``experiments/configs`` and defaults to the study's own file
(``run_main``'s ``config_file``); the study's settings are its ``experiment`` section
(``--config.experiment.num_samples=500``), the model behind it is the rest of the file, trained
by ``trainer.train_and_evaluate``. ``run(config, workdir)`` returns the paths it wrote; the
markdown tables are printed, then the paths and the time taken.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from trainer import flag_errors

FLAGS = flags.FLAGS


def take_model_overrides(argv: list[str]) -> list[tuple[str, str]]:
    """Removes the ``--config.model.<field>=value`` arguments (but ``model.name``) from
    ``argv`` in place and returns them as ``(field path, text)``, in order.

    A config file lists only the model fields it changes; ml_collections refuses an override
    of a field the file does not have. These are applied after the file and its other overrides
    (``apply_model_overrides``), so any field of the model's constructor can be set."""
    taken, kept = [], []
    for arg in argv:
        key, sep, text = arg.partition("=")
        if sep and key.startswith("--config.model.") and key != "--config.model.name":
            taken.append((key[len("--config.model."):], text))
        else:
            kept.append(arg)
    argv[:] = kept
    return taken


_E_INT = re.compile(r"^[+-]?\d+(\.\d*)?[eE]\+?\d+$")


def e_notation_to_int(argv: list[str]) -> None:
    """Rewrites ``--config.<field>=1e3`` in place as ``=1000`` (ml_collections' int parser
    refuses e-notation; a float field parses ``1000`` as well): integral values only."""
    for i, arg in enumerate(argv):
        key, sep, text = arg.partition("=")
        if sep and key.startswith("--config.") and _E_INT.match(text):
            value = float(text)
            if value.is_integer() and abs(value) < 2**53:
                argv[i] = f"{key}={int(value)}"


def parse_text(text: str):
    """An override's value: a tuple or list literal, else as the config shortcuts parse it
    (int, with ``1e3`` the int 1000; float; bool; None; the text)."""
    from trainer import base
    if text.strip()[:1] in "([":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return base.parse_value(text)


def apply_model_overrides(config, overrides) -> None:
    """Sets ``config.model.<path>`` for each ``(path, text)`` of ``overrides`` (those
    ``take_model_overrides`` took from the command line), adding the fields the config file
    leaves out; the model's config dataclass then checks the names and values
    (``models.get_model_config``)."""
    if not overrides:
        return
    import ml_collections
    with config.unlocked():
        for path, text in overrides:
            *parents, leaf = path.split(".")
            section = config.model
            for name in parents:
                if name not in section or not isinstance(section[name],
                                                         ml_collections.ConfigDict):
                    section[name] = ml_collections.ConfigDict()
                section = section[name]
            value = parse_text(text)
            if isinstance(section.get(leaf), float) and isinstance(value, int):
                value = float(value)
            if leaf in section:
                del section[leaf]  # the command line's type, as for a new field
            section[leaf] = value


def prepare_argv(argv) -> tuple[list[str], list[tuple[str, str]]]:
    """A copy of ``argv`` with e-notation integers rewritten and the ``--config.model.*``
    overrides taken out, and those overrides."""
    argv = list(argv)
    e_notation_to_int(argv)
    return argv, take_model_overrides(argv)


def define_flags(default_config: str | None = None,
                 config_help: str = "Configuration file.") -> None:
    """``--workdir`` (required) and ``--config`` (required unless ``default_config``, which is
    parsed here with the ``--config.*`` overrides of ``sys.argv``)."""
    flags.DEFINE_string("workdir", None, "Directory for the results (and the trained models).")
    config_flags.DEFINE_config_file("config", default_config, config_help, lock_config=True)
    flags.mark_flags_as_required(["workdir"] + ([] if default_config else ["config"]))


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def fail(message, status: int = 2) -> NoReturn:
    """Exits with ``status`` (2: a usage error) after writing ``error: <message>`` to stderr on
    one line (the message's line breaks and runs of spaces become single spaces)."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.exit(status)


def run_or_exit(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``; a run stopped by a signal (``trainer.Preempted``: its line, exit
    128 + the signal) or a workdir that does not allow it (``workdirs.WorkdirError``:
    exit 1) ends the process with one line instead of a traceback."""
    from trainer.preemption import Preempted
    from trainer.workdirs import WorkdirError
    try:
        return fn(*args, **kwargs)
    except Preempted as stop:
        fail(stop, stop.exit_code)
    except WorkdirError as error:
        fail(error, 1)


WORKDIR_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workdir_config.py")


def config_from_workdir(argv: list[str]) -> None:
    """Inserts ``--config=trainer/workdir_config.py:W`` into ``argv`` (in place) when it has no
    ``--config`` and its ``--workdir`` W has a ``config.json``: the workdir's own config, which
    the ``--config.*`` overrides then change."""
    if any(a in ("--config", "-config") or a.startswith(("--config=", "-config="))
           for a in argv[1:]):
        return
    workdir = flag_errors.flag_argument(argv, "workdir")
    if workdir is not None and os.path.exists(os.path.join(workdir, "config.json")):
        argv.insert(1, f"--config={WORKDIR_CONFIG}:{workdir}")
    elif workdir is not None and not any(a in HELP_FLAGS for a in argv[1:]):
        fail(f"--config is required: {workdir} has no config.json (a new run needs a config "
             f"file of experiments/configs; eval and sample need a trained workdir)")


def parse_flags(argv, default_config: str | None = None,
                workdir_config: bool = False) -> list[str]:
    """absl's flag parsing of the command line ``argv``, prepared once (``prepare_argv``):
    ``sys.argv`` becomes the prepared copy (config_flags reads the ``--config.*`` overrides
    there), the flags are defined (``define_flags``, ``default_config`` parsed then), parsed,
    and the model overrides applied to ``FLAGS.config``.

    Any error of the command line exits with status 2 and one line on stderr, ``error: ...``
    (``fail``): a value a flag's type refuses, naming the flag, the value and the type
    (``--config.training.num_train_steps=abc: expected an int, got 'abc'``); a config file
    that is missing, does not import, or whose ``get_config`` raises (naming the file, the
    error and its line); an unknown flag or config field; a required flag left out; a
    positional argument; a bad model field. With ``workdir_config`` (``trainer.main``) a
    missing ``--config`` is the workdir's own (``config_from_workdir``)."""
    argv, model_overrides = prepare_argv(argv)
    if workdir_config:
        config_from_workdir(argv)
    sys.argv = argv
    try:
        if "workdir" not in FLAGS:
            define_flags(default_config)
            for name in ("workdir", "config"):  # listed by --help, under the module run
                FLAGS.register_key_flag_for_module(argv[0], FLAGS[name])
        rest = FLAGS(argv)
    except Exception as error:  # noqa: BLE001 -- absl and ml_collections raise many kinds
        message = flag_errors.flag_error(error, argv, default_config)
        if message is None:
            raise
        fail(message)
    message = flag_errors.check_loaded_config(argv, default_config)
    if message is not None:
        fail(message)
    if len(rest) > 1:
        fail(f"unexpected argument {rest[1]!r}: flags are --name=value (a bool field "
             f"--config.<field>=false, not --config.<field> false)")
    if "config" in FLAGS and FLAGS.config is not None and model_overrides:
        try:
            apply_model_overrides(FLAGS.config, model_overrides)
            check_model_section(FLAGS.config)
        except (ValueError, TypeError) as error:
            fail(error)
    return rest


def check_model_section(config) -> None:
    """Raises ValueError naming a field of ``config.model`` that the model does not have (with
    the closest one) or a bad value (the model config's own check)."""
    import dataclasses
    import difflib

    import models
    fields = config.model.to_dict()
    name = fields.pop("name", None)
    if name in models.MODELS:
        valid = [f.name for f in dataclasses.fields(models.MODELS[name])]
        for key in fields:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                raise ValueError(f"unknown field 'model.{key}' for model {name!r}"
                                 f"{'; did you mean ' + repr(close[0]) + '?' if close else ''}"
                                 f" (its fields: {', '.join(valid)})")
    try:
        models.get_model_config(name, **fields)
    except ValueError as error:
        raise ValueError(f"config.model ({name!r}): {error}") from None


def _trainer_warnings_in_one_line(default: Callable) -> Callable:
    """A ``warnings.formatwarning`` that writes the trainer's own warnings (a changed config
    field, a damaged checkpoint, a repaired metrics.csv) as ``warning: <message>``, without the
    file and line of the library code that raised them; others as ``default``."""
    def formatwarning(message, category, filename, lineno, line=None):
        if category.__module__.startswith("trainer."):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)
    return formatwarning


def app_run(main: Callable, argv=None, epilog: Callable[[], str] | None = None,
            default_config: str | None = None, workdir_config: bool = False) -> None:
    """``absl.app.run(main)`` with ``parse_flags``, exiting 0 (not absl's 1) after printing the
    help (and then ``epilog()``)."""
    args = sys.argv if argv is None else argv
    warnings.formatwarning = _trainer_warnings_in_one_line(warnings.formatwarning)
    try:
        app.run(main, args,
                flags_parser=lambda a: parse_flags(a, default_config, workdir_config))
    except SystemExit as done:
        if done.code == 1 and any(a in HELP_FLAGS for a in args[1:]):
            if epilog is not None:
                print(epilog(), flush=True)
            raise SystemExit(0) from None
        raise


def settings_help(settings: type, config, path: str) -> str:
    """The ``--help`` text of an experiment module's settings: each field of the dataclass
    ``settings`` with its default (``config.experiment``, from ``path``), then its docstring."""
    import dataclasses
    import inspect
    lines = [f"\nExperiment settings: --config.experiment.<field>=value (defaults from {path}):"]
    section = config.experiment if config is not None and "experiment" in config else {}
    for field in dataclasses.fields(settings):
        default = section[field.name] if field.name in section else "(required)"
        lines.append(f"  {field.name} = {default!r}")
    lines += ["", inspect.cleandoc(settings.__doc__ or "")]
    return "\n".join(lines)


def report(paths: dict[str, str], seconds: float) -> None:
    """Prints the time taken and every path written; for a markdown file with tables, how many
    tables and rows it holds (the tables themselves are in the file, not on the console)."""
    print(f"done in {seconds:.0f} s; wrote:")
    for name, path in paths.items():
        summary = ""
        if name.endswith(".md") and os.path.exists(path):
            with open(path) as f:
                lines = [ln for ln in f if ln.startswith("|")]
            tables = sum(set(ln.strip()) <= set("|-: ") for ln in lines)
            if tables:
                summary = (f"  ({tables} table{'s' * (tables != 1)}, "
                           f"{len(lines) - 2 * tables} rows)")
        print(f"  {path}{summary}")


def _fits(value, hint) -> bool:
    """Whether ``value`` (from a ConfigDict) is of the type ``hint`` (int, float, bool, str,
    None, unions, ``tuple[X, ...]``, ``tuple[X, Y]``, ``Literal``); other hints pass."""
    import types
    import typing
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (int, float):  # an int is a float too; a bool is neither
        kinds = (int, float) if hint is float else int
        return isinstance(value, kinds) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(map(_fits, value, args)))
    return True


def check_settings_types(settings: type, config, argv=()) -> str | None:
    """The one-line message for the first field of ``config.experiment`` whose value is not of
    its type in the dataclass ``settings`` (``--config.experiment.dims=abc: expected
    tuple[int, ...], got ('abc',)``), else None; ``argv`` gives the text typed for it."""
    import dataclasses
    import typing
    if "experiment" not in config:
        return None
    try:
        hints = typing.get_type_hints(settings)
    except (NameError, TypeError):
        return None
    section = config.experiment
    for field in dataclasses.fields(settings):
        if field.name in section and not _fits(section[field.name], hints[field.name]):
            value = section[field.name]
            flag = f"--config.experiment.{field.name}"
            typed = [a.partition("=")[2] for a in argv if a.startswith(flag + "=")]
            expected = getattr(hints[field.name], "__name__", None)
            expected = str(hints[field.name]) if expected in (None, "tuple") else expected
            text = typed[-1] if typed else repr(value)
            return f"{flag}={text}: expected {expected}, got {value!r}"
    return None


def check_config(config, settings: type | None = None, argv=()) -> None:
    """Checks ``config`` before any work: ``trainer.validate_config`` (after
    ``trainer.initialize_distributed``, which must come first) and, with ``settings`` (a study's
    ``experiment`` dataclass), the types of its fields and ``trainer.experiment_config``. A bad
    config exits with status 2 and one line (``fail``): ``error: training.batch_size must be
    an integer >= 1, got -1``."""
    from trainer.config import experiment_config, validate_config
    from trainer.run import initialize_distributed
    try:
        initialize_distributed(config)
        validate_config(config)
    except ValueError as error:
        fail(error)
    if settings is None:
        return
    message = check_settings_types(settings, config, argv)
    if message is not None:
        fail(message)
    try:
        experiment_config(settings, config)
    except ValueError as error:  # the settings' own checks (__post_init__), naming the field
        fail(error if str(error).startswith("experiment") else f"config.experiment: {error}")


def run_main(run: Callable, config_file: str, argv=None, settings: type | None = None) -> None:
    """Runs ``run(FLAGS.config, FLAGS.workdir)`` under ``absl.app`` with ``config_file`` (a
    study's own file) as the default config, after ``check_config``; ``--help`` also lists the
    fields of ``settings`` (the study's ``experiment`` dataclass) with their defaults."""
    def main(args):
        logging.set_verbosity(logging.WARNING)
        check_config(FLAGS.config, settings, sys.argv)
        start = time.perf_counter()
        paths = run_or_exit(run, FLAGS.config, FLAGS.workdir)
        report(paths, time.perf_counter() - start)

    def epilog():
        return settings_help(settings, FLAGS["config"].value, config_file)

    app_run(main, argv, epilog if settings is not None else None, config_file)
