"""Nothing lost, nothing silent: checkpoint digests catch bit rot, SIGTERM and SIGINT save
before stopping, every checkpoint damaged is refused, a full disk is one line, and readers
(evaluation, sampling, ``load_score_fn``) take no lock and write nothing into the workdir.

The fast tier saves checkpoints of an untrained state (no compilation); the slow tier trains one
tiny run (6 steps, checkpoints at 2, 4 and 6) per module and copies it per test.
"""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import warnings

import jax
import numpy as np
import pytest

import trainer
from experiments.configs import gmm_mlp
from trainer import checkpointing, preemption, workdirs

FIELDS = {
    "data.dim": 4, "data.num_train": 256, "data.num_test": 64, "model.hidden": 128,
    "model.num_blocks": 1, "training.num_train_steps": 6, "training.batch_size": 16,
    "training.log_every": 1, "training.checkpoint_every": 2, "training.keep_checkpoints": 3,
    "training.eval_every": 1000, "training.sample_every": 1000, "training.num_devices": 1,
    "training.rng_block_size": 2, "optim.warmup_steps": 1, "eval.batch_size": 16,
    "eval.num_batches": 1, "eval.likelihood": False, "eval.num_samples": 4,
    "sampling.num_steps": 5,
}


def config(**fields):
    return trainer.override(gmm_mlp.get_config(), {**FIELDS, **fields})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A workdir with checkpoints 2, 4 and 6 of the config's train state (its parameters
    scaled by the step), saved as the trainer saves them; and that state."""
    from trainer import data, state
    cfg = trainer.parse_config(config())
    optimizer, _ = state.create_optimizer(cfg.optim)
    import models
    init = state.create_train_state(jax.random.PRNGKey(0), models.get_model(cfg.model), (4,),
                                    optimizer)
    workdir = tmp_path_factory.mktemp("saved") / "run"
    manager = checkpointing.create_manager(str(workdir))
    for step in (2, 4, 6):
        checkpointing.save_checkpoint(manager, init.replace(
            step=np.int32(step), params=jax.tree.map(lambda p, s=step: p * s, init.params)),
            data.DataState(0, step))
    return workdir, {"state": init}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run: its workdir and ``train_and_evaluate``'s result."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return workdir, trainer.train_and_evaluate(config(), str(workdir))


def copy(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    return workdir


def tree(path):
    """Every file and directory under ``path`` with its size and modification time."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            out[os.path.relpath(p, path)] = (st.st_size if name in files else 0, st.st_mtime_ns)
    return out


def largest_array_file(checkpoint):
    files = [os.path.join(root, f) for root, _, names in os.walk(checkpoint / "state")
             for f in names if os.sep + "d" in root]
    return max(files, key=os.path.getsize)


def restore(workdir, target, **kwargs):
    return checkpointing.restore_checkpoint(checkpointing.create_manager(str(workdir)),
                                            target, **kwargs)


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("fraction,size", [(0.5, 64), (0.25, 16), (0.75, 16), (0.9, 16)])
def test_bit_rot_in_an_array_file_is_caught_by_the_digest(saved, tmp_path, fraction, size):
    """Random bytes in the newest checkpoint's largest array file (``state/ocdbt.process_0/d``):
    where they land in compressed data orbax and tensorstore restore it without complaint (NaN
    included) and the digest catches it; where they land on a zstd frame header (the file's
    layout varies from run to run) the read fails. Either way the checkpoint is set aside and
    step 4 is restored, equal to a restore of step 4 from the intact run. The digest alone is
    tested deterministically below."""
    workdir = copy(saved, tmp_path)
    target = saved[1]["state"]
    good, _ = restore(saved[0], target, step=4)
    path = largest_array_file(workdir / "checkpoints" / "6")
    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * fraction))
        f.write(np.random.default_rng(int(fraction * 100)).bytes(size))
    with pytest.warns(checkpointing.DamagedCheckpointWarning,
                      match=r"checkpoints/6 is damaged \((\d+ of \d+ arrays do not match their "
                            r"digest|ValueError: .*(Data corruption|Error reading))"):
        state, data_state = restore(workdir, target)
    assert int(state.step) == 4 and data_state is not None
    assert_same(state, good)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6.damaged"]


def test_valid_arrays_that_do_not_match_the_digest_are_damage(saved, tmp_path):
    """Step 4's array files in place of step 6's: orbax reads them without complaint (they are a
    valid checkpoint), only the digest can tell, and it does; step 4 is restored."""
    workdir = copy(saved, tmp_path)
    checkpoints = workdir / "checkpoints"
    shutil.rmtree(checkpoints / "6" / "state")
    shutil.copytree(checkpoints / "4" / "state", checkpoints / "6" / "state")
    good, _ = restore(saved[0], saved[1]["state"], step=4)
    with pytest.warns(checkpointing.DamagedCheckpointWarning,
                      match=r"checkpoints/6 is damaged \(\d+ of \d+ arrays do not match their "
                            r"digest"):
        state, _ = restore(workdir, saved[1]["state"])
    assert int(state.step) == 4
    assert_same(state, good)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6.damaged"]


def test_a_changed_data_state_or_digest_is_damage(saved, tmp_path):
    """A data state edited in place (a valid JSON, another position) and a digest file that is
    not a digest are both damage."""
    workdir = copy(saved, tmp_path)
    data_file = workdir / "checkpoints" / "6" / "data" / "metadata"
    text = data_file.read_text()
    assert '"index": 6' in text
    data_file.write_text(text.replace('"index": 6', '"index": 7'))
    (workdir / "checkpoints" / "4" / "digest" / "metadata").write_text("[1, 2]")
    with pytest.warns(checkpointing.DamagedCheckpointWarning) as record:
        state, _ = restore(workdir, saved[1]["state"])
    assert int(state.step) == 2
    assert [str(w.message).split(" (")[1].split(";")[0] for w in record] == [
        "its data state does not match its digest)", "its digest file is not a digest)"]


@pytest.mark.slow
def test_every_checkpoint_damaged_is_refused_then_restart_starts_over(finished, tmp_path):
    workdir = copy(finished, tmp_path)
    for step in (2, 4, 6):
        path = largest_array_file(workdir / "checkpoints" / str(step))
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(b"\xff" * 32)
    metrics = (workdir / "metrics.csv").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", checkpointing.DamagedCheckpointWarning)
        with pytest.raises(checkpointing.DamagedCheckpointsError,
                           match=r"every checkpoint in .*checkpoints is damaged \(2.damaged, "
                                 r"4.damaged, 6.damaged\); nothing was overwritten.*--restart"):
            trainer.train_and_evaluate(config(), str(workdir))
        # a second attempt finds them already set aside, and still refuses
        with pytest.raises(checkpointing.DamagedCheckpointsError):
            trainer.train_and_evaluate(config(), str(workdir))
    assert (workdir / "metrics.csv").read_bytes() == metrics
    assert not (workdir / "train.lock").exists()
    out = trainer.train_and_evaluate(config(), str(workdir), restart=True)
    assert out["train_loss"].shape == (6,)
    assert_same(out["state"], finished[1]["state"])


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(finished, tmp_path,
                                                                    monkeypatch):
    """orbax reports ENOSPC as a ``ValueError: RESOURCE_EXHAUSTED`` from tensorstore (here
    raised in its place): the save fails with one line naming the directory, the free space
    and the intact checkpoint, and the run resumes from it."""
    workdir = copy(finished, tmp_path)
    import orbax.checkpoint as ocp

    def full(self, step, *args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"/x/d/abc\": "
                         "[OS error 28: No space left on device]\nmore lines")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(checkpointing.CheckpointSaveError) as error:
        trainer.train_and_evaluate(config(**{"training.num_train_steps": 8}), str(workdir))
    message = str(error.value)
    assert "\n" not in message
    assert f"could not save checkpoint 8 in {workdir / 'checkpoints'}: no space left" in message
    assert "MiB free there); checkpoint 6 is intact" in message
    assert not (workdir / "train.lock").exists()
    monkeypatch.undo()
    state, _ = restore(workdir, finished[1]["state"])
    assert int(state.step) == 6


@pytest.mark.slow
def test_readers_take_no_lock_and_write_nothing_into_the_workdir(finished, tmp_path, capsys):
    """While a run holds the workdir's lock, two evaluations at once (threads), sampling to
    another directory and ``load_score_fn`` all read its newest checkpoint; the workdir's tree
    (sizes and modification times) is unchanged after them. Each phase of the evaluation and
    the sampling is announced on stderr, with what it runs."""
    workdir = copy(finished, tmp_path)
    with workdirs.WorkdirLock(workdir):
        before = tree(workdir)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first, second = pool.map(
                lambda out: trainer.evaluate_workdir(config(), str(workdir), out=out),
                [None, str(tmp_path / "eval")])
        x, paths = trainer.sample_workdir(config(), str(workdir),
                                          out=str(tmp_path / "samples"))
        score_fn, _ = trainer.load_score_fn(str(workdir))
        assert tree(workdir) == before
    err = capsys.readouterr().err
    for phase in ("test loss over 1 batches: done in", "4 samples, euler_maruyama with 5 steps "
                  "..."):
        assert f"gaussian_pair d=4 seed=0: step 6: {phase}" in err, err
    assert first == second and first["test_loss"] == finished[1]["eval"]["test_loss"]
    assert sorted(os.listdir(tmp_path / "eval")) == ["eval_6.json", "samples"]
    assert paths == [str(tmp_path / "samples" / f"sample_mode_6.{e}") for e in ("png", "npy")]
    assert x.shape == (4, 4)
    xt = np.ones((2, 4))
    np.testing.assert_array_equal(score_fn(xt, np.full((2,), 0.5)),
                                  finished[1]["score_fn"](xt, np.full((2,), 0.5)))


def _mount_read_only(source, target) -> bool:
    """A read-only bind mount of ``source`` at ``target``, where the environment allows it
    (root with mount rights)."""
    os.makedirs(target)
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if done.returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(target)],
                      capture_output=True).returncode != 0:
        subprocess.run(["umount", str(target)], check=True)
        return False
    return True


@pytest.mark.slow
def test_readers_work_on_a_read_only_mount(finished, tmp_path):
    workdir = tmp_path / "ro"
    if shutil.which("mount") is None or not _mount_read_only(finished[0], workdir):
        pytest.skip("a read-only bind mount is not permitted here (the no-write test above "
                    "covers readers everywhere)")
    try:
        with pytest.raises(OSError, match="Read-only file system"):
            (workdir / "probe").write_text("")
        metrics = trainer.evaluate_workdir(config(), str(workdir))
        score_fn, _ = trainer.load_score_fn(str(workdir))
        x, _ = trainer.sample_workdir(config(), str(workdir), out=str(tmp_path / "samples"))
    finally:
        subprocess.run(["umount", str(workdir)], check=True)
    assert metrics["test_loss"] == finished[1]["eval"]["test_loss"] and x.shape == (4, 4)


@pytest.mark.slow
def test_readers_skip_a_damaged_checkpoint_and_leave_it_in_place(finished, tmp_path):
    workdir = copy(finished, tmp_path)
    path = largest_array_file(workdir / "checkpoints" / "6")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\x00\x01" * 8)
    before = tree(workdir)
    with pytest.warns(checkpointing.DamagedCheckpointWarning, match="trying the previous one"):
        metrics = trainer.evaluate_workdir(config(), str(workdir))
    assert tree(workdir) == before and np.isfinite(metrics["test_loss"])


@pytest.mark.slow
def test_sigint_finishes_the_step_saves_and_resumes_exactly(finished, tmp_path):
    """SIGINT (Ctrl-C) after the checkpoint of step 2, sent from inside the run: no
    KeyboardInterrupt; step 3 finishes, its checkpoint is saved, the lock released and
    ``Preempted`` raised; the resumed run ends with the uninterrupted run's parameters and
    logs each step once. (SIGTERM, a second signal and two processes: test_train, in
    subprocesses.)"""
    for signum in (signal.SIGINT,):
        workdir = tmp_path / signal.Signals(signum).name

        def on_checkpoint(step, signum=signum):
            if step == 2:
                os.kill(os.getpid(), signum)

        with pytest.raises(preemption.Preempted, match=f"stopped at step 3 on "
                           f"{signal.Signals(signum).name}, saved .*checkpoints/3") as stop:
            trainer.train_and_evaluate(config(), str(workdir), on_checkpoint=on_checkpoint)
        assert stop.value.exit_code == 128 + signum
        assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
        assert not (workdir / "train.lock").exists()
        assert signal.getsignal(signum) is not None  # the previous handler is back
        out = trainer.train_and_evaluate(config(), str(workdir))
        assert out["train_loss"].shape == (3,)
        assert_same(out["state"], finished[1]["state"])
        steps = [line.split(",")[0] for line in
                 (workdir / "metrics.csv").read_text().splitlines()[1:]
                 if ",train/loss," in line]
        assert steps == [str(s) for s in range(1, 7)]
