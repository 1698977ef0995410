"""Command line for the experiment modules: every field of a config dataclass becomes a flag.

``python -m experiments.<module> --workdir DIR [--field value ...]``; tuples take several values
(``--dims 2 16``). Each module calls ``run_main(Config, run, argv)``; ``run(config, workdir)``
returns the paths it wrote, which are printed with the time taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import typing
from collections.abc import Callable


def _parser(config_cls, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        hint = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            parser.add_argument(flag, type=item, nargs="+", default=None)
        elif hint is bool:
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"),
                                default=None)
        else:
            parser.add_argument(flag, type=hint, default=None)
    return parser


def run_main(config_cls, run: Callable, argv=None, description: str = "") -> dict[str, str]:
    """Parses ``argv`` into ``config_cls`` (unset flags keep the defaults) and runs it."""
    args = vars(_parser(config_cls, description).parse_args(argv))
    workdir = args.pop("workdir")
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in args.items()
                 if v is not None}
    config = config_cls(**overrides)
    start = time.perf_counter()
    paths = run(config, workdir)
    for name, path in paths.items():
        if name.endswith(".md"):
            with open(path) as f:
                print(f"{name}:\n{f.read()}")
    print(f"done in {time.perf_counter() - start:.0f} s; wrote:")
    for path in paths.values():
        print(f"  {path}")
    return paths
