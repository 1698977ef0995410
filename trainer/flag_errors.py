"""The one-line messages of command-line errors (``trainer.cli.parse_flags``): what absl and
ml_collections raised, read from their parsers and the frames that raised it rather than from
their message text, turned into ``--flag=value: expected <type>, got 'value'`` and the like.
"""

from __future__ import annotations

import os
import re

from absl import flags

FLAGS = flags.FLAGS


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling, outermost first."""
    chain = [error]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) and nxt not in chain:
        chain.append(nxt)
    return chain


def _frames(error: BaseException) -> list:
    """The frames of ``error``'s traceback, outermost first."""
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _ran(error: BaseException, function) -> list:
    """The frames of ``error``'s traceback that run ``function`` (a function or method)."""
    code = getattr(function, "__code__", None)
    return [f for f in _frames(error) if f.f_code is code]


def flag_argument(argv, flag: str, default: str | None = None) -> str | None:
    """The value of the last ``--<flag>`` (``--flag=VALUE`` or ``--flag VALUE``) in
    ``argv[1:]``, else ``default``."""
    found, args = default, list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, sep, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == flag:
            found = value if sep else (args[i + 1] if i + 1 < len(args) else found)
    return found


def config_argument(argv, default_config: str | None = None) -> str | None:
    """The value of the last ``--config`` (``FILE[:args]``) in ``argv[1:]``, else
    ``default_config``."""
    return flag_argument(argv, "config", default_config)


def _expected(parser) -> str:
    """What a value of ``parser`` (an absl or ml_collections flag parser) must be."""
    from ml_collections.config_flags import config_flags as cf
    from ml_collections.config_flags import tuple_parser
    if isinstance(parser, flags.EnumParser):
        return "one of " + ", ".join(parser.enum_values)
    if isinstance(parser, flags.EnumClassParser):
        return "one of " + ", ".join(parser.member_names)
    if isinstance(parser, flags.BooleanParser):
        return "a bool (true or false)"
    if isinstance(parser, (flags.IntegerParser, flags.FloatParser)):
        kind = "an int" if isinstance(parser, flags.IntegerParser) else "a float"
        low, high = parser.lower_bound, parser.upper_bound
        return (kind + ("" if low is None else f" >= {low}")
                + ("" if high is None else f"{' and' if low is not None else ''} <= {high}"))
    if isinstance(parser, tuple_parser.TupleParser):
        return "a tuple such as '(1, 2)' (a string in quotes: \"('a', 'b')\")"
    if isinstance(parser, cf._ConfigDictParser):
        return "a dict such as \"{'key': 1}\""
    return f"a {parser.flag_type()}"


def _bad_value(error: BaseException) -> str | None:
    """``--name=value: expected <type>, got 'value'`` for a value a flag's parser refused
    (absl's ``IllegalFlagValueError`` from ``Flag._parse``), else None."""
    frames = _ran(error, flags.Flag._parse)
    if not frames:
        return None
    flag, argument = frames[-1].f_locals["self"], frames[-1].f_locals["argument"]
    if isinstance(argument, list | tuple):  # a tuple field's flag collects its arguments
        argument = argument[-1] if len(argument) == 1 else ",".join(map(str, argument))
    return f"--{flag.name}={argument}: expected {_expected(flag.parser)}, got {argument!r}"


def _required(error: BaseException, argument: str | None) -> str | None:
    """``--workdir is required: <its help>`` for absl's error of required flags left out (or a
    ``--config`` FILE, ``argument``, whose ``get_config`` returned None)."""
    names = re.findall(r"Flag --(\S+) must have a value other than None", str(error))
    if not names:
        return None
    if "config" in names and argument:
        return f"--config={argument}: get_config() returned None"
    if len(names) == 1:
        return f"--{names[0]} is required: {FLAGS[names[0]].help}"
    return " and ".join(f"--{n}" for n in names) + " are required"


def _load_error(error: OSError, argument: str) -> str:
    """``--config=FILE: no such file`` (or the OS error) for a config file that did not load."""
    path = argument.split(":", 1)[0]
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        return f"--config={argument}: no such file {path!r}{where}"
    text = str(error).strip().splitlines()[-1].strip()
    return f"--config={argument}: {text}"


def _config_file_error(original: BaseException, argument: str) -> str:
    """One line naming the config file ``argument`` and what its import or ``get_config`` raised
    (``original``): a ValueError's message alone (a config file refusing its ``:key=value``
    argument, as ``trainer.base.apply_shortcuts`` does), otherwise the exception's type and the
    line of the file it came from."""
    path = os.path.abspath(argument.split(":", 1)[0])
    if isinstance(original, SyntaxError):
        where = (f"line {original.lineno}" if os.path.abspath(original.filename or "") == path
                 else f"{original.filename} line {original.lineno}")
        return f"--config={argument}: SyntaxError at {where}: {original.msg}"
    if isinstance(original, AttributeError) and getattr(original, "name", None) == "get_config":
        return f"--config={argument}: the file defines no get_config()"
    if isinstance(original, ValueError):
        return f"--config={argument}: {original}"
    lines = [f.f_lineno for f in _frames(original)
             if os.path.abspath(f.f_code.co_filename) == path]
    where = f" at line {lines[-1]}" if lines else ""
    return f"--config={argument}: {type(original).__name__}{where}: {original}"


def _unknown_field(error: BaseException, argv) -> str:
    """The unknown ``--config.<field>`` of ``argv`` with ml_collections' suggestion."""
    inner = error.args[0] if error.args else error
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    key, _, hint = str(text).partition("\n")
    key = key.strip("'\"")
    where = [a for a in argv[1:] if a.startswith("--config.") and key in a]
    return (f"unknown config field {key!r}"
            f"{' in ' + where[0].split('=')[0] if where else ''}{'; ' + hint if hint else ''}")


def _unknown_flag(error: flags.UnrecognizedFlagError) -> str:
    """``unknown flag --name`` with the closest defined flags."""
    import difflib
    names = [n for n in FLAGS if not n.startswith("config.")]
    close = difflib.get_close_matches(error.flagname, names, n=2)
    return (f"unknown flag --{error.flagname}"
            f"{'; did you mean ' + ' or '.join('--' + c for c in close) + '?' if close else ''}")


def flag_error(error: BaseException, argv, default_config: str | None = None) -> str | None:
    """The one-line message for ``error``, raised while parsing the command line ``argv`` (a
    flag's value, a config file, a config field, a flag left out or unknown), or None for an
    exception that is not about the command line (a bug, shown with its traceback)."""
    from ml_collections.config_flags import config_flags as cf
    argument = config_argument(argv, default_config) or ""
    chain = _chain(error)
    loading = [e for e in chain if _ran(e, cf.ConfigFileFlagParser.parse)]
    if loading:  # raised by loading the config file (its import or its get_config)
        original = loading[-1]  # ml_collections re-raises a ValueError as a new one
        return (_load_error(original, argument) if isinstance(original, OSError)
                else _config_file_error(original, argument))
    if isinstance(error, flags.UnrecognizedFlagError):
        return _unknown_flag(error)
    if isinstance(error, flags.IllegalFlagValueError):
        return _bad_value(error) or _required(error, argument) or str(error)
    if isinstance(error, (AttributeError, KeyError)) and _ran(error, cf._ConfigFlag._parse):
        return _unknown_field(error, argv)
    if isinstance(error, flags.Error):  # ml_collections' FlagOrderError, a missing value, ...
        return str(error)
    return None


def check_loaded_config(argv, default_config: str | None = None) -> str | None:
    """The one-line message for a ``--config`` that parsed without an error but holds none: a
    file that did not load (ml_collections defers that error to the first use of the config),
    or a ``get_config`` that returned None; None when the config is there (or not asked for)."""
    from ml_collections.config_flags import config_flags as cf
    argument = config_argument(argv, default_config)
    if "config" not in FLAGS or argument is None:
        return None
    config = FLAGS["config"].value
    if isinstance(config, cf._ErrorConfig):  # its attributes raise the error of the load
        return _load_error(object.__getattribute__(config, "_error"), argument)
    if config is None:
        return f"--config={argument}: get_config() returned None"
    return None
