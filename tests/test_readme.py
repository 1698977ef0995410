"""The README's usage example runs and its Tweedie moments equal the oracle's posterior; the
shell commands of the README and docs work as printed after the quick start (``make`` creates
``.venv``; nothing is activated): each names a program the venv has."""

import configparser
import importlib
import importlib.util
import os
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


# appended to the training command of docs/training.md: the same config, trained in seconds
TINY_TRAINING = {"data.dim": 4, "model.hidden": 16, "model.num_blocks": 1,
                 "training.num_train_steps": 4, "training.batch_size": 16,
                 "training.checkpoint_every": 2, "training.log_every": 2,
                 "optim.warmup_steps": 1, "eval.batch_size": 16, "eval.num_batches": 1,
                 "eval.likelihood_examples": 4, "eval.num_samples": 8, "eval.rtol": 1e-3,
                 "eval.atol": 1e-3, "sampling.num_steps": 5}


def runnable(argv: list[str]) -> list[str]:
    """``argv`` with its ``.venv/bin/`` program taken from this interpreter's environment (the
    venv ``make`` created, when the tests run there): ``python`` is this interpreter, a console
    script the one beside it."""
    program = argv[0].removeprefix(".venv/bin/")
    if program == "python":
        return [sys.executable, *argv[1:]]
    return [str(pathlib.Path(sys.executable).parent / program), *argv[1:]]


@pytest.mark.slow
def test_training_commands_run_as_printed(tmp_path):
    """docs/training.md's train, eval and sample commands (the README's train command among
    them), run one after the other as printed in a directory laid out like the repository's
    root, the training one with ``TINY_TRAINING`` overrides appended: each exits 0, eval and
    sample need no --config, every phase is announced on stderr (the checkpoint restore, the
    likelihood, the sampling) and each mode ends by listing the files it wrote."""
    commands = venv_commands(ROOT / "docs" / "training.md")
    readme = (ROOT / "README.md").read_text()
    assert [" ".join(argv) for argv in commands[:1]] == re.findall(
        r"`(\.venv/bin/python -m trainer\.main --config [^`]*)`", readme)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outputs = []
    for i, argv in enumerate(commands):
        extra = [f"--config.{k}={v}" for k, v in TINY_TRAINING.items()] if i == 0 else []
        done = subprocess.run(runnable(argv) + extra, cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, (argv, done.stderr[-3000:])
        outputs.append(done)
    train, evaluate, sample = outputs
    workdir = tmp_path / "runs" / "gmm_mlp"
    assert (workdir / "checkpoints" / "4").is_dir()
    assert "train gaussian_pair d=4 seed=0" in train.stderr
    assert "probability-flow likelihood of 4 test examples" in train.stderr
    wrote = train.stdout.split("wrote:\n")[1].split()
    assert str(workdir / "checkpoints" / "4") in wrote and "runs/gmm_mlp/metrics.csv" in wrote
    for done in (evaluate, sample):
        assert f"restoring checkpoint 4 from {workdir / 'checkpoints'} ..." in done.stderr
        assert "done in" in done.stderr
    assert "test_loss = " in evaluate.stdout and "bits/dim" in evaluate.stdout
    assert "64 samples of shape (4,); wrote:\n  grid.png" in sample.stdout
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
