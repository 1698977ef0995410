"""The files beside the checkpoints of a training workdir, damaged or written again: a
``config.json`` that is not a config is refused in one line naming it, before anything is written;
a damaged ``metrics.csv`` is rebuilt from its readable rows with a ``MetricsRepairWarning`` naming
the rows lost; each ``(step, name)`` appears once in ``metrics.csv``, and a rerun of a finished
workdir leaves it byte for byte as it was.

One tiny run (40 steps, a checkpoint every 10) is trained once per module; each test damages a
copy of it.
"""

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import warnings

import numpy as np
import pytest

import trainer
from experiments.configs import base, gmm_mlp
from trainer import checkpointing, cli, metrics, workdirs

FIELDS = {
    "data.dim": 4, "data.num_train": 512, "data.num_test": 128, "model.hidden": 16,
    "model.num_blocks": 1, "training.batch_size": 32, "training.num_train_steps": 40,
    "training.log_every": 1, "training.checkpoint_every": 10, "training.eval_every": 1000,
    "training.sample_every": 1000, "training.num_devices": 1, "optim.warmup_steps": 2,
    "eval.batch_size": 32, "eval.num_batches": 1, "eval.likelihood": False,
    "eval.num_samples": 16, "sampling.num_steps": 5,
}


def config(**fields):
    return base.override(gmm_mlp.get_config(), {**FIELDS, **fields})


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A workdir with a checkpoint (the initial train state, step 0) and its config.json, as
    the trainer leaves them, without compiling a step."""
    workdir = tmp_path_factory.mktemp("checkpointed")
    run = trainer.Run(trainer.parse_config(config()), str(workdir))
    try:
        checkpointing.save_checkpoint(run.manager, run.state, run.train_it.state)
        workdirs.save_config(workdir, dataclasses.asdict(run.cfg))
    finally:
        run.lock.release()
    return workdir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir trained to step 40 (checkpoints 20, 30, 40) and its final evaluation."""
    workdir = tmp_path_factory.mktemp("finished")
    trainer.train_and_evaluate(config(), str(workdir))
    return workdir


@pytest.fixture
def workdir(finished, tmp_path):
    """A copy of the finished workdir to damage."""
    return shutil.copytree(finished, tmp_path / "w")


def snapshot(workdir):
    """Every file of ``workdir`` with a hash of its bytes."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def rows(workdir):
    """The rows of ``metrics.csv`` as ``(step, name, value)``; every line must parse."""
    with open(workdir / "metrics.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "step,name,value"
    out = [(int(s), n, float(v)) for s, n, v in (line.split(",") for line in lines[1:])]
    assert len({(s, n) for s, n, _ in out}) == len(out), "a (step, name) appears twice"
    return out


def loss_steps(workdir):
    return [s for s, n, _ in rows(workdir) if n == "train/loss"]


def damaged_config(kind, good: bytes) -> bytes:
    return {"truncated": good[:len(good) // 2],
            "empty": b"",
            "random bytes": np.random.default_rng(0).bytes(300),
            "a list": b"[]",
            "an empty object": b"{}",
            "an object that is not a config": b'{"note": "not a config"}',
            "a config without its sde": good.replace(b'"sde"', b'"sde_old"'),
            "a config whose model is a number": good.replace(b'"model": {',
                                                             b'"model": 3, "model_old": {'),
            }[kind]


PROBLEMS = {
    "truncated": r"is not valid JSON \(.*line \d+ column \d+\)",
    "empty": r"is empty",
    "random bytes": r"is not text \(byte \d+ is not UTF-8\)",
    "a list": r"is not a config \(a JSON list, where a saved config is an object with the "
              r"sections data, loss, model, sde, training\)",
    "an empty object": r"is not a config \(missing the sections data, loss, model, sde, "
                       r"training\)",
    "an object that is not a config": r"is not a config \(missing the sections data, loss, "
                                      r"model, sde, training\)",
    "a config without its sde": r"is not a config \(missing the section sde\)",
    "a config whose model is a number": r"is not a config \(model is not an object\)",
}
RESUMING = (r": restore it, or delete it to use the config given \(the checkpoints then decide "
            r"the shapes: a config that does not fit them is still refused\)")
READING = (r": restore it, or pass the config the workdir was trained with \(the checkpoints "
           r"decide the shapes: a config that does not fit them is refused\)")


def raises_one_line(call, expected):
    with pytest.raises(workdirs.DamagedConfigError) as error:  # a ValueError
        call()
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert "\n" not in message and re.fullmatch(expected, message), message


@pytest.mark.parametrize("kind", list(PROBLEMS)[:5])
def test_damaged_config_json_is_one_line_naming_it_and_nothing_is_written(kind, checkpointed,
                                                                          tmp_path, capsys):
    """A config.json that is not UTF-8 JSON or not a config (a comparison with it would be
    vacuous: today a list resumes with a ConfigChangeWarning per field) refuses the resume with
    one line naming the file, what is wrong and what to do (``trainer.main`` prints it and exits
    with status 1), before anything in the workdir is written; ``saved_config`` (eval, sample
    and load_score_fn without a config) says the same with its own advice."""
    workdir = shutil.copytree(checkpointed, tmp_path / "w")
    path = workdir / "config.json"
    path.write_bytes(damaged_config(kind, path.read_bytes()))
    before = snapshot(workdir)
    problem = re.escape(str(path)) + " " + PROBLEMS[kind]
    with pytest.raises(SystemExit) as done:  # as trainer.main runs it
        cli.run_or_exit(trainer.train_and_evaluate, config(), str(workdir))
    line = capsys.readouterr().err
    assert done.value.code == 1 and re.fullmatch(f"error: {problem}{RESUMING}\n", line), line
    assert snapshot(workdir) == before
    raises_one_line(lambda: trainer.saved_config(str(workdir)), problem + READING)
    raises_one_line(lambda: trainer.load_score_fn(str(workdir)), problem + READING)
    assert snapshot(workdir) == before


def test_a_config_json_that_is_not_a_config_is_named_by_the_comparison_and_the_reader(checkpointed,
                                                                                      tmp_path):
    """Objects that are not a config (sections missing or not objects) are refused by
    ``check_config`` (what a resume runs) and ``saved_config`` alike, naming what is wrong."""
    good = (checkpointed / "config.json").read_bytes()
    resolved = dataclasses.asdict(trainer.parse_config(config()))
    assert workdirs.check_config(checkpointed, resolved, True) == []
    for kind in PROBLEMS:
        workdir = tmp_path / kind.replace(" ", "_")
        workdir.mkdir()
        (workdir / "config.json").write_bytes(damaged_config(kind, good))
        problem = re.escape(str(workdir / "config.json")) + " " + PROBLEMS[kind]
        raises_one_line(lambda: workdirs.check_config(workdir, resolved, True),  # noqa: B023
                        problem + RESUMING)
        raises_one_line(lambda: trainer.saved_config(workdir), problem + READING)  # noqa: B023


@pytest.mark.slow
def test_rerun_of_a_finished_workdir_leaves_metrics_csv_as_it_was(workdir):
    """A rerun evaluates the last step again; its rows replace the earlier ones (today they
    were appended a second time), so metrics.csv is byte for byte the same; ``--mode eval``
    writes nothing into it."""
    before = (workdir / "metrics.csv").read_bytes()
    steps = loss_steps(workdir)
    assert steps == list(range(1, 41))
    assert [n for s, n, _ in rows(workdir) if s == 40 and n.startswith("eval/")] == [
        "eval/test_loss", "eval/sample_nfe"]
    trainer.train_and_evaluate(config(), str(workdir))
    assert (workdir / "metrics.csv").read_bytes() == before
    trainer.evaluate_workdir(config(), str(workdir))
    assert (workdir / "metrics.csv").read_bytes() == before


def damage_csv(workdir, kind):
    """Damages metrics.csv; returns its rows before, the rows damaged and the train/loss steps
    lost (up to step 40)."""
    path = workdir / "metrics.csv"
    raw = path.read_bytes()
    original = rows(workdir)
    lines = raw.split(b"\n")[1:-1]
    offsets = np.cumsum([len(b"step,name,value\n")] + [len(line) + 1 for line in lines])
    if kind == "truncated mid-row":  # in the middle of step 20's train/loss row
        k = next(i for i, line in enumerate(lines) if line.startswith(b"20,train/loss,"))
        path.write_bytes(raw[:offsets[k] + 10])
        return original, set(original[k:]), list(range(20, 41))
    # random bytes over about 5 lines from the start of step 12's rows
    start, junk = raw.index(b"\n12,train/") + 1, np.random.default_rng(0).bytes(150)
    assert max(junk) >= 0x80  # not UTF-8
    path.write_bytes(raw[:start] + junk + raw[start + len(junk):])
    damaged = {row for row, a, b in zip(original, offsets[:-1], offsets[1:], strict=True)
               if a < start + len(junk) and b > start}
    return original, damaged, sorted(s for s, n, _ in damaged if n == "train/loss")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random bytes", "truncated mid-row"])
def test_damaged_metrics_csv_is_rebuilt_from_its_readable_rows(kind, workdir):
    """Random bytes in metrics.csv, or the file cut in the middle of a row: the rerun keeps
    every row that can be read, warns naming the unreadable lines and the steps left without a
    train/loss row, rewrites the file (each (step, name) once) and redraws loss.png; today the
    first raised a UnicodeDecodeError and the second resumed saying nothing."""
    original, damaged, lost = damage_csv(workdir, kind)
    assert lost and lost == list(range(lost[0], lost[-1] + 1))
    (workdir / "loss.png").unlink()
    with pytest.warns(trainer.MetricsRepairWarning) as record:
        trainer.train_and_evaluate(config(), str(workdir))
    [message] = [str(w.message) for w in record if w.category is trainer.MetricsRepairWarning]
    span = f"{lost[0]}" if len(lost) == 1 else f"{lost[0]}-{lost[-1]}"
    assert re.fullmatch(
        rf"{re.escape(str(workdir / 'metrics.csv'))} is damaged: \d+ unreadable lines? "
        rf"\(lines? [-\d, ]+\); no train/loss row at steps? {span} \(log_every = 1\)\. Kept the "
        rf"\d+ rows that could be read up to step 40; the checkpoints are not affected",
        message), message
    # every row that could be read is kept, and the evaluation of step 40 is there once
    assert rows(workdir) == [r for r in original
                             if r not in damaged or (r[0] == 40 and r[1].startswith("eval/"))]
    assert loss_steps(workdir) == [s for s in range(1, 41) if s not in lost]
    assert os.path.getsize(workdir / "loss.png") > 0


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_with_a_damaged_metrics_csv(workdir):
    """The issue's case: metrics.csv cut in the middle of step 20's row, the newest checkpoint
    30 (the run killed after it): the resume warns that steps 20-30 have no train/loss row,
    logs 31-40 again, and every (step, name) appears once."""
    shutil.rmtree(workdir / "checkpoints" / "40")
    damage_csv(workdir, "truncated mid-row")
    with pytest.warns(trainer.MetricsRepairWarning,
                      match=r"no train/loss row at steps 20-30 \(log_every = 1\)\. Kept the "
                            r"\d+ rows that could be read up to step 30"):
        out = trainer.train_and_evaluate(config(), str(workdir))
    assert out["train_loss"].shape == (10,)
    assert loss_steps(workdir) == [*range(1, 20), *range(31, 41)]


def write_csv(path, text: bytes):
    path.write_bytes(text)
    return str(path)


def test_metric_writer_keeps_each_step_and_name_once_newest_value_wins(tmp_path):
    """Rows written again replace the earlier ones (the newest value, at the end); rows after
    ``resume_step`` and earlier duplicates in the file are dropped on opening, without a
    warning for an intact file; a row cut short after the resumed step (a run killed while
    writing it) is dropped silently too."""
    path = write_csv(tmp_path / "m.csv",
                     b"step,name,value\n1,train/loss,1.0\n2,train/loss,2.0\n2,eval/x,5.0\n"
                     b"2,eval/x,6.0\n3,train/loss,3.0\n4,train/lo")
    writer = metrics.MetricWriter(str(tmp_path / "tb"), csv_path=path, resume_step=2,
                                  log_every=1)
    with open(path) as f:
        assert f.read() == "step,name,value\n1,train/loss,1.0\n2,train/loss,2.0\n2,eval/x,6.0\n"
    writer.write_scalars(2, {"x": 7.0, "y": 1.5}, prefix="eval/")
    writer.write_scalars(3, {"loss": 3.5}, prefix="train/")
    writer.write_scalars(2, {"y": 2.5}, prefix="eval/")
    writer.close()
    with open(path) as f:
        assert f.read() == ("step,name,value\n1,train/loss,1.0\n2,train/loss,2.0\n"
                            "2,eval/x,7.0\n3,train/loss,3.5\n2,eval/y,2.5\n")


def test_metric_writer_names_the_rows_a_damaged_csv_lost(tmp_path):
    """Unreadable lines (bytes that are not UTF-8, garbled rows, a row cut short) and a file
    that ends early are named: the lines, and the steps of the logging grid (the first call end
    at or after each multiple of log_every) left without a train/loss row up to the resumed
    step; a grid with no row missing (log_every = 10, resumed at 35: the rows end at 30) is
    not damage. save_loss_png draws the rows that can be read."""
    good = "step,name,value\n" + "".join(f"{s},train/loss,{1 / s!r}\n" for s in range(1, 36))
    lines = good.encode().split(b"\n")
    cases = [  # (bytes, resume_step, log_every, steps_per_call, message or None)
        (b"\n".join(lines[:13]) + b"\n\xff\xfe garbage\n" + b"\n".join(lines[14:]), 35, 1, 1,
         r"1 unreadable line \(line 14\); no train/loss row at step 13 \(log_every = 1\)"),
        (b"\n".join(lines[:13]) + b"\n13,train/loss,1.2.3\n14,train/loss\n" +
         b"\n".join(lines[15:]), 35, 1, 1,
         r"2 unreadable lines \(lines 14-15\); no train/loss row at steps 13-14"),
        (b"\n".join(lines[:20]) + b"\n20,tra", 35, 1, 1,
         r"1 unreadable line \(line 21\); no train/loss row at steps 20-35"),
        (b"\n".join(lines[:21]) + b"\n", 35, 5, 1,
         r"^\S+ is damaged: no train/loss row at steps 25-35 \(log_every = 5\)\. Kept the 20 "
         r"rows that could be read up to step 35; the checkpoints are not affected$"),
        (b"\n".join(lines[:21]) + b"\n", 35, 10, 5, r"no train/loss row at step 30 "),
        (b"\n".join(lines[:31]) + b"\n", 35, 10, 1, None),
        (b"", 3, 1, 1, r"no train/loss row at steps 1-3"),
    ]
    for k, (text, resume_step, log_every, steps_per_call, message) in enumerate(cases):
        path = write_csv(tmp_path / f"m{k}.csv", text)
        reopen = functools.partial(metrics.MetricWriter, str(tmp_path / "tb"), csv_path=path,
                                   resume_step=resume_step, log_every=log_every,
                                   steps_per_call=steps_per_call)
        if message is not None:
            with pytest.warns(metrics.MetricsRepairWarning, match=message):
                reopen().close()
            kept, unreadable = metrics.read_metrics(path)
            assert not unreadable and all(s <= resume_step for s, _, _ in kept)
        # opening it again changes nothing; only rows still missing at the end are named again
        with open(path, "rb") as f:
            before = f.read()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            reopen().close()
        again = [str(w.message) for w in record if w.category is metrics.MetricsRepairWarning]
        assert len(again) == (k >= 2 and message is not None), (k, again)
        assert all("unreadable" not in m for m in again)
        with open(path, "rb") as f:
            assert f.read() == before
    # loss.png from a damaged file: the rows that can be read
    path = write_csv(tmp_path / "d.csv", good.encode()[:200] + b"\xff\x00,\n" +
                     good.encode()[200:] + b"36,train/l")
    assert metrics.save_loss_png(path, str(tmp_path / "loss.png")) == str(tmp_path / "loss.png")
