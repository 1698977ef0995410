"""The command line's errors (``trainer/cli.py``): a bad flag value, config file or config is
one line on stderr, ``error: ...``, naming the flag and the value, with exit status 2 and no
traceback, before anything is written.

Most cases parse in this process (``cli.parse_flags``, then ``trainer.main.main``'s checks
before any work, with the work itself replaced by a failure); subprocesses check the real
``python -m`` entry points (in the fast tier only a study's, with its default config file)."""

import os
import subprocess
import sys

import pytest

# ml_collections loads config files with SourceFileLoader.load_module
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/configs/gmm_mlp.py"
SHORTCUTS = ("shortcuts are ['batch_size', 'loss', 'lr', 'model', 'parameterization', "
             "'sampler', 'sde', 'seed', 'steps']")

# config files that fail to load, by what goes wrong
BAD_FILES = {
    "syntax.py": "def get_config(arg=None)\n    return None\n",
    "raises.py": "\ndef get_config(arg=None):\n    raise RuntimeError('no data here')\n",
    "imports.py": "import no_such_module_here\n",
    "no_get_config.py": "CONFIG = 1\n",
    "returns_none.py": "def get_config(arg=None):\n    return None\n",
}


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT
    return env


@pytest.fixture
def cli_error(tmp_path, monkeypatch, capsys):
    """``cli_error(*args)``: the exit status and stderr of ``trainer.main`` run with ``args``
    (``--workdir`` added, config files of ``BAD_FILES`` in ``{tmp}``), asserting that nothing
    ran and the workdir was not created."""
    from trainer import main

    def reset():
        main.FLAGS.unparse_flags()
        for name in [n for n in main.FLAGS if n.startswith("config.")]:
            delattr(main.FLAGS, name)  # the override flags of the previous parse

    def work(config, workdir, **options):
        raise AssertionError(f"the command line was accepted: {sys.argv}")

    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(main, "MODES", dict.fromkeys(main.MODES, work))
    workdir = tmp_path / "run"

    def run(*args):
        argv = ["main", *[a.format(tmp=tmp_path) for a in args]]
        if not any(a.startswith("--workdir") for a in args):
            argv.append(f"--workdir={workdir}")
        monkeypatch.setattr(sys, "argv", argv)
        # ml_collections loads each file as the module config_config, into the one it finds
        monkeypatch.delitem(sys.modules, "config_config", raising=False)
        reset()
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main.cli.parse_flags(argv, workdir_config=True)  # as main.run parses
            main.main(["main"])
        assert not workdir.exists()
        return done.value.code, capsys.readouterr().err

    yield run
    reset()


def assert_one_line(code, err, want):
    """Exit status 2 and stderr exactly ``error: <want>`` (``want`` ending in ``...``: its
    start)."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    line = err.strip()
    if want.endswith("..."):
        assert line.startswith("error: " + want[:-3]), line
    else:
        assert line == "error: " + want, line


@pytest.mark.parametrize("args, want", [
    (["--config.training.num_train_steps=abc"],
     "--config.training.num_train_steps=abc: expected an int, got 'abc'"),
    (["--config.training.num_train_steps=1.5"],
     "--config.training.num_train_steps=1.5: expected an int, got '1.5'"),
    (["--config.training.num_devices=two"],  # an int | None field (a typed FieldReference)
     "--config.training.num_devices=two: expected an int, got 'two'"),
    (["--config.optim.lr=fast"], "--config.optim.lr=fast: expected a float, got 'fast'"),
    (["--config.eval.likelihood=maybe"],
     "--config.eval.likelihood=maybe: expected a bool (true or false), got 'maybe'"),
    (["--config.sampling.options=fast"],
     "--config.sampling.options=fast: expected a dict such as \"{'key': 1}\", got 'fast'"),
], ids=["int-abc", "int-1.5", "optional-int", "float", "bool", "dict"])
def test_a_value_of_the_wrong_type_names_the_flag_value_and_type(cli_error, args, want):
    assert_one_line(*cli_error("--config", CONFIG, *args), want)


@pytest.mark.parametrize("args, want", [
    (["--mode=bogus"], "--mode=bogus: expected one of train, eval, sample, got 'bogus'"),
    (["--num_samples=0"], "--num_samples=0: expected an int >= 1, got '0'"),
    (["--num_samples=x"], "--num_samples=x: expected an int >= 1, got 'x'"),
    (["--num_samples=5"], "--num_samples=5 is for --mode=sample, not --mode=train"),
    (["--workdirr=x"], "unknown flag --workdirr; did you mean --workdir?"),
    (["extra"], "unexpected argument 'extra': flags are --name=value ..."),
    (["--config.eval.likelihood", "false"], "unexpected argument 'false': ..."),
    (["--config.training.batch_sizee=3"],
     "unknown config field 'batch_sizee' in --config.training.batch_sizee; "
     "Did you mean \"batch_size\" instead of \"batch_sizee\"?"),
    (["--config.model.hidden=abc"],
     "config.model ('mlp'): hidden must be an integer >= 4, got 'abc'"),
], ids=["enum", "lower-bound", "int", "num-samples-mode", "unknown-flag", "positional",
        "bool-with-space", "unknown-field", "model-field"])
def test_a_bad_flag_is_one_line(cli_error, args, want):
    assert_one_line(*cli_error("--config", CONFIG, *args), want)


def test_a_required_flag_left_out_is_one_line(cli_error):
    assert_one_line(*cli_error("--workdir=x"), "--config is required: x has no config.json (a "
                    "new run needs a config file of experiments/configs; eval and sample need a "
                    "trained workdir)")
    assert_one_line(*cli_error("--workdir=x", "--mode=eval"), "--config is required: x has no "
                    "config.json ...")
    assert_one_line(*cli_error("--config", CONFIG, "--workdir"),
                    "Missing value for flag --workdir")
    assert_one_line(*cli_error("--workdir=x", "--config"), "Missing value for flag --config")
    from trainer import main
    main.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as done:  # no --workdir at all
        main.cli.parse_flags(["main", "--config", CONFIG])
    assert done.value.code == 2


@pytest.mark.parametrize("args, want", [
    (["--config=nowhere.py"], f"--config=nowhere.py: no such file 'nowhere.py' (relative to "
                              f"{ROOT})"),
    (["--config", "nowhere.py", "--config.training.seed=1"],  # the overrides use the file
     f"--config=nowhere.py: no such file 'nowhere.py' (relative to {ROOT})"),
    (["--config={tmp}/syntax.py"], "--config={tmp}/syntax.py: SyntaxError at line 1: "
                                   "expected ':'"),
    (["--config={tmp}/raises.py"], "--config={tmp}/raises.py: RuntimeError at line 3: "
                                   "no data here"),
    (["--config={tmp}/imports.py"], "--config={tmp}/imports.py: ModuleNotFoundError at line 1: "
                                    "No module named 'no_such_module_here'"),
    (["--config={tmp}/no_get_config.py"],
     "--config={tmp}/no_get_config.py: the file defines no get_config()"),
    (["--config={tmp}"], "--config={tmp}: [Errno 21] Is a directory: '{tmp}'"),
    ([f"--config={CONFIG}:foo=1"], f"--config={CONFIG}:foo=1: unknown config field 'foo'; "
                                   f"{SHORTCUTS}"),
    ([f"--config={CONFIG}:sde"],
     f"--config={CONFIG}:sde: config argument items must be key=value, got 'sde'"),
    (["--config.training.seed=1", "--config", CONFIG],
     "Found --config.training.seed=1 in argv before a value for --config was specified"),
], ids=["missing", "missing-with-override", "syntax-error", "raises", "import-error",
        "no-get-config", "directory", "unknown-shortcut", "shortcut-without-value",
        "override-before-file"])
def test_a_config_file_that_does_not_load_is_one_line(cli_error, tmp_path, args, want):
    assert_one_line(*cli_error(*args), want.format(tmp=tmp_path))


def test_a_config_file_returning_none_is_named(cli_error, tmp_path):
    code, err = cli_error("--config={tmp}/returns_none.py")
    assert code == 2 and "Traceback" not in err  # ml_collections logs a warning line first
    assert err.strip().splitlines()[-1] == (f"error: --config={tmp_path}/returns_none.py: "
                                            f"get_config() returned None")


@pytest.mark.parametrize("args, want", [
    (["--config.training.batch_size=-1"], "training.batch_size must be an integer >= 1, got -1"),
    ([f"--config={CONFIG}:sde=nope"], "bad sde config (sde.name, sde.kwargs): sde name must be "
                                      "one of ['bm', 'cosine', 'ddpm', 'ou', 'subvp', 've', "
                                      "'vp'], got 'nope'"),
    (["--config.sampling.method=nope"], "sampling.method must be one of [..."),
    (["--config.training.batch_size=12"],
     "training.batch_size (12) must be divisible by the number of devices (8 = 1 processes x "
     "8) times training.rng_block_size (8): each device's share is a multiple of the block"),
], ids=["batch-size", "sde-shortcut", "sampler", "devices"])
def test_a_config_the_checks_refuse_is_one_line_before_any_work(cli_error, args, want):
    if not args[0].startswith("--config="):
        args = ["--config", CONFIG, *args]
    assert_one_line(*cli_error(*args), want)


def test_a_study_setting_of_the_wrong_type_is_one_line(capsys):
    from experiments import compare_samplers
    from experiments.configs import compare_samplers as compare_samplers_config
    from trainer import cli

    def check(**change):
        config = compare_samplers_config.get_config()
        with config.ignore_type():
            config.experiment.update(change)
        with pytest.raises(SystemExit) as done:
            cli.check_config(config, compare_samplers.ComparisonConfig,
                             ["x"] + [f"--config.experiment.{k}=text" for k in change])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        return err.strip()

    assert check(dims=("abc",)) == ("error: --config.experiment.dims=text: expected "
                                    "tuple[int, ...], got ('abc',)")
    assert check(gaussian_var=(1.0,)) == ("error: --config.experiment.gaussian_var=text: "
                                          "expected tuple[float, float], got (1.0,)")
    assert check(num_samples="many") == ("error: --config.experiment.num_samples=text: "
                                         "expected int, got 'many'")
    assert check(num_samples=0) == "error: config.experiment: num_samples must be >= 1, got 0"
    assert check(bogus=1).startswith("error: experiment config: unknown keys ['bogus']")


def test_the_type_check_of_settings():
    from typing import Literal

    from trainer.cli import _fits
    assert _fits(1, float) and not _fits(True, int) and not _fits(1.5, int)
    assert _fits((1, 2.5), tuple[float, ...]) and not _fits(("a",), tuple[int, ...])
    assert _fits(None, int | None) and not _fits("a", int | None)
    assert _fits("a", Literal["a", "b"]) and not _fits("c", Literal["a", "b"])
    assert not _fits((1,), tuple[int, int]) and _fits([1, 2], tuple[int, int])


def _launch(*args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)


def test_a_study_entry_point_prints_one_line(tmp_path):
    """The real ``python -m`` run (absl's ``app.run``) of a study, with its default config
    file: a tuple its parser refuses."""
    proc = _launch("experiments.compare_samplers", f"--workdir={tmp_path / 'run'}",
                   "--config.experiment.nfes=(1, 2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and not out, err[-2000:]
    assert err.strip() == ("error: --config.experiment.nfes=(1, 2: expected a tuple such as "
                           "'(1, 2)' (a string in quotes: \"('a', 'b')\"), got '(1, 2'")
    assert not os.listdir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("args, want", [
    (["trainer.main", "--config", CONFIG, "--config.training.num_train_steps=abc"],
     "error: --config.training.num_train_steps=abc: expected an int, got 'abc'"),
    (["experiments.compare_samplers", "--config.experiment.dims=abc"],
     "error: --config.experiment.dims=abc: expected tuple[int, ...], got ('abc',)"),
    (["experiments.compare_samplers", "--config.training.batch_size=-1"],
     "error: training.batch_size must be an integer >= 1, got -1"),
    (["experiments.digits", "--config=nowhere.py"],
     f"error: --config=nowhere.py: no such file 'nowhere.py' (relative to {ROOT})"),
    (["trainer.main", f"--config={CONFIG}:sde=nope"],
     "error: bad sde config (sde.name, sde.kwargs): sde name must be one of ['bm', 'cosine', "
     "'ddpm', 'ou', 'subvp', 've', 'vp'], got 'nope'"),
    (["trainer.main", "--config", CONFIG, "--mode=bogus"],
     "error: --mode=bogus: expected one of train, eval, sample, got 'bogus'"),
], ids=["main-int", "study-tuple", "study-config-check", "study-missing-file", "main-config-check",
        "main-enum"])
def test_more_entry_point_errors_are_one_line(tmp_path, args, want):
    proc = _launch(*args, f"--workdir={tmp_path / 'run'}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and err.strip() == want, err[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error,status,line", [
    ("in use", 1, "error: workdir /w is in use by process 7 on host h"),
    ("damaged", 1, "error: every checkpoint in /w/checkpoints is damaged (4.damaged)"),
    ("full", 1, "error: could not save checkpoint 8 in /w/checkpoints: no space left"),
    ("none", 1, "error: no checkpoint in /w/checkpoints"),
    ("changed", 1, "error: the config differs from the one the checkpoints in /w were trained "
                   "with"),
    ("sigterm", 143, "error: stopped at step 5 on SIGTERM, saved /w/checkpoints/5; run the "
                     "same command again to resume"),
    ("sigint", 130, "error: stopped at step 5 on SIGINT, saved /w/checkpoints/5; run the "
                    "same command again to resume"),
])
def test_a_workdir_error_or_a_stop_is_one_line(error, status, line, capsys):
    """What a workdir does not allow and a run stopped by a signal end ``cli.run_or_exit`` (the
    launcher's and the studies' call of the work) with one line and their status; other
    errors keep their traceback."""
    import signal

    from trainer import checkpointing, cli, preemption, workdirs

    raised = {
        "in use": workdirs.WorkdirInUseError("workdir /w is in use by process 7 on host h"),
        "damaged": checkpointing.DamagedCheckpointsError(
            "every checkpoint in /w/checkpoints is damaged (4.damaged)"),
        "full": checkpointing.CheckpointSaveError(
            "could not save checkpoint 8 in /w/checkpoints: no space left"),
        "none": checkpointing.NoCheckpointError("no checkpoint in /w/checkpoints"),
        "changed": workdirs.ConfigMismatchError(
            "the config differs from the one the checkpoints in /w were trained with"),
        "sigterm": preemption.Preempted(signal.SIGTERM, 5, "/w/checkpoints/5"),
        "sigint": preemption.Preempted(signal.SIGINT, 5, "/w/checkpoints/5"),
    }[error]

    def work(config, workdir):
        raise raised

    with pytest.raises(SystemExit) as done:
        cli.run_or_exit(work, None, "/w")
    assert done.value.code == status
    assert capsys.readouterr().err == line + "\n"
    with pytest.raises(KeyError):  # anything else is not hidden
        cli.run_or_exit(lambda: {}["x"])


def test_report_counts_the_tables_of_markdown_files_only_where_there_are_some(tmp_path, capsys):
    """``report`` prints every path; a markdown file with tables gets its table and row counts,
    one without (a list of statements) gets none."""
    from trainer import cli

    tables = tmp_path / "t.md"
    tables.write_text("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n| c |\n|---|\n| 5 |\n")
    prose = tmp_path / "p.md"
    prose.write_text("# Claims\n\n- a above b\n")
    cli.report({"t.md": str(tables), "p.md": str(prose), "x.csv": str(tmp_path / "x.csv")}, 3.2)
    out = capsys.readouterr().out.splitlines()
    assert out == ["done in 3 s; wrote:", f"  {tables}  (2 tables, 3 rows)", f"  {prose}",
                   f"  {tmp_path / 'x.csv'}"]
