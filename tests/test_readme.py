"""The README's usage example runs and its Tweedie moments equal the oracle's posterior; the
shell commands of the README and docs work as printed after the quick start (``make`` creates
``.venv``; nothing is activated): each names a program the venv has."""

import configparser
import importlib
import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]
BASH_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
# a bare interpreter: works only in an activated venv (or by chance), not after the quick start
BARE_PYTHON = re.compile(r"(?<![\w/.=-])python3?(?:\.\d+)? -m ")


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def console_scripts() -> dict[str, str]:
    """setup.cfg's ``console_scripts``: script name -> ``module:function``."""
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def venv_commands(path: pathlib.Path) -> list[list[str]]:
    """The commands of the fenced bash blocks of ``path`` that start with ``.venv/bin/``
    (continuation lines joined, comments dropped), split as the shell splits them."""
    commands = []
    for block in BASH_BLOCK.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0].startswith(".venv/bin/"):
                commands.append(argv)
    return commands


def check_command(argv: list[str]) -> None:
    """Raises AssertionError unless the venv installed by ``make`` has ``argv``'s program."""
    program = argv[0].removeprefix(".venv/bin/")
    if program == "python":
        assert argv[1] == "-m" and importlib.util.find_spec(argv[2]) is not None, argv
    elif program == "pip":
        extras = setup_cfg()["options.extras_require"]
        for arg in argv[2:]:
            if m := re.fullmatch(r"\.\[([\w,-]+)\]", arg):
                assert set(m[1].split(",")) <= set(extras), f"{argv}: extras {list(extras)}"
    else:
        scripts = console_scripts()
        assert program in scripts, f"{argv}: not a console script of setup.cfg {list(scripts)}"
        module, function = scripts[program].split(":")
        target = getattr(importlib.import_module(module), function)
        assert importlib.util.find_spec(target.module) is not None, (argv, target.module)


@pytest.mark.parametrize("page", ["README.md", "docs/training.md", "docs/experiments.md"])
def test_printed_commands_name_programs_of_the_venv(page):
    """Fast: every ``.venv/bin/...`` command of the page's bash blocks names a module the venv
    imports, a console script of setup.cfg whose target exists, or an extra of setup.cfg."""
    commands = venv_commands(ROOT / page)
    if page != "docs/experiments.md":  # its commands are in a table, checked below
        assert commands, f"no .venv/bin command found in {page}'s bash blocks"
    for argv in commands:
        check_command(argv)


def test_no_command_needs_an_activated_venv():
    """Fast: no page prints ``python -m ...`` for a bare ``python``; the inline commands
    ``.venv/bin/python -m X`` of the README, docs and results name importable modules."""
    pages = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
    for page in pages:
        text = page.read_text()
        bare = [line for line in text.splitlines() if BARE_PYTHON.search(line)]
        assert not bare, f"{page.relative_to(ROOT)}: write .venv/bin/python -m: {bare}"
        for module in re.findall(r"\.venv/bin/python -m ([\w.<>]+)", text):
            if "<" not in module:
                assert importlib.util.find_spec(module) is not None, (page, module)


def test_every_study_and_the_launcher_have_a_console_script():
    """Fast: ``ddpm-sde`` runs ``trainer.main`` and ``ddpm-sde-<study>`` each study with a
    ``main`` (underscores as dashes)."""
    scripts = console_scripts()
    modules = {name: getattr(importlib.import_module(target.split(":")[0]),
                             target.split(":")[1]).module for name, target in scripts.items()}
    studies = sorted(p.stem for p in (ROOT / "experiments").glob("*.py")
                     if re.search(r"^def main\(", p.read_text(), re.M))
    assert modules == {"ddpm-sde": "trainer.main",
                       **{f"ddpm-sde-{s.replace('_', '-')}": f"experiments.{s}" for s in studies}}


@pytest.mark.slow
def test_console_script_prints_the_launchers_help():
    """``ddpm-sde --help`` exits 0 with the launcher's flags, the same text as ``python -m
    trainer.main --help``: the venv's script where ``pip install -e .`` made one, else its
    target function in a fresh interpreter."""
    script = pathlib.Path(sys.executable).parent / "ddpm-sde"
    if script.exists():
        argv = [str(script), "--help"]
    else:
        argv = [sys.executable, "-c", "import sys; sys.argv = ['ddpm-sde', '--help']; "
                "from trainer.console import main; main()"]
    got = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    want = subprocess.run([sys.executable, "-m", "trainer.main", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert "--workdir" in got.stdout and "--mode" in got.stdout
    assert got.stdout == want.stdout


@pytest.mark.slow
def test_readme_usage_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    env = {}
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102 -- the project's own README
    np.testing.assert_allclose(env["mean0"], env["post"].mean(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(env["cov0"], env["post"].covariance(), rtol=1e-7, atol=1e-9)


def test_accelerator_extras_pin_the_jax_version():
    """Fast: each accelerator extra of setup.cfg (``jax[cuda12]``, ``jax[tpu]``) pins exactly
    the jax version of the main dependencies, so installing it changes no jax or jaxlib."""
    cfg = setup_cfg()
    pins = dict(line.split("==") for line in cfg["options"]["install_requires"].split())
    extras = cfg["options.extras_require"]
    accelerators = {name: extras[name].split() for name in ("cuda12", "tpu")}
    assert pins["jaxlib"] == pins["jax"]
    for name, requirements in accelerators.items():
        assert requirements == [f"jax[{name}]=={pins['jax']}"], (name, requirements)
