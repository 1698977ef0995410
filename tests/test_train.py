"""Training: each config family end to end, pmap over 8 devices against 1, two processes with
``jax.distributed`` against one, and runs killed (after a checkpoint, during a save) that resume
to exactly the parameters of an uninterrupted run.

The multi-process tests run ``tests/_train_worker.py`` in subprocesses (their own device counts,
float32 as in real runs); the others run in this process.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
import trainer
from experiments.configs import base, cifar10, digits_unet, gmm_mlp, gmm_transformer, mnist
from trainer import checkpointing, data, workdirs
from trainer.step import DROPOUT_STREAM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_train_worker.py")

# the tiny run the subprocess tests share: 12 steps, checkpoints at 4, 8, 12
TINY = {
    "config": "gmm_mlp", "data.dim": 4, "data.num_train": 512, "data.num_test": 128,
    "model.hidden": 32, "model.num_blocks": 1, "training.batch_size": 32,
    "training.num_train_steps": 12, "training.checkpoint_every": 4, "training.log_every": 1,
    "training.eval_every": 1000, "training.sample_every": 1000, "optim.warmup_steps": 2,
    "eval.batch_size": 32, "eval.num_batches": 1, "eval.likelihood": False,
    "eval.num_samples": 16, "sampling.num_steps": 10,
}


def tiny(config, **fields):
    """``config`` shrunk for a test: few steps, small batches, a cheap evaluation."""
    values = {"training.num_train_steps": 4, "training.batch_size": 16, "training.log_every": 1,
              "training.checkpoint_every": 2, "training.eval_every": 1000,
              "training.sample_every": 1000, "optim.warmup_steps": 1, "eval.batch_size": 16,
              "eval.num_batches": 1, "eval.likelihood_examples": 4, "eval.num_probes": 2,
            "eval.num_samples": 4,
              "eval.rtol": 1e-3, "eval.atol": 1e-3, "sampling.num_steps": 5,
              "training.rng_block_size": 2, **fields}
    for path, value in values.items():
        *parents, leaf = path.split(".")
        section = config
        for name in parents:
            section = section[name]
        section[leaf] = value
    return config


def fake_images(shape, n=64, seed=0):
    """A stand-in for a prepared tfds image dataset: random 8-bit images of ``shape``."""
    v = np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.float32)
    return data.Dataset(data.ArraySource(v), tuple(shape), 256, None)


def check_run_outputs(workdir, step, metrics):
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == str(step)
    with open(os.path.join(workdir, f"eval_{step}.json")) as f:
        assert json.load(f)["step"] == step
    assert os.path.exists(os.path.join(workdir, "samples", f"samples_{step}.png"))
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(workdir, "tensorboard")))
    for name, value in metrics.items():
        assert math.isfinite(value), (name, value)


TINY_MODEL = {"data.dim": 4, "model.hidden": 16, "model.num_blocks": 1}


def test_smoke_train_and_evaluate(tmp_path):
    """The fast tier's run of the trainer: 2 steps of a tiny MLP on one device, a checkpoint, the
    final evaluation and samples, all finite (the full runs are in the slow tier)."""
    config = tiny(gmm_mlp.get_config(), **TINY_MODEL, **{
        "training.num_train_steps": 2, "training.num_devices": 1, "eval.likelihood": False})
    out = trainer.train_and_evaluate(config, str(tmp_path))
    check_run_outputs(str(tmp_path), 2, out["eval"])
    assert out["train_loss"].shape == (2,) and np.all(np.isfinite(out["train_loss"]))
    # the workdir's config.json is the config, and load_score_fn its EMA's score
    assert trainer.parse_config(trainer.saved_config(str(tmp_path))) == trainer.parse_config(config)
    score_fn, sde = trainer.load_score_fn(str(tmp_path))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    t = jnp.linspace(0.1, 0.9, 5)
    np.testing.assert_array_equal(score_fn(x, t), out["score_fn"](x, t))
    assert sde == out["sde"]
    raw, _ = trainer.load_score_fn(str(tmp_path), config, params="raw")
    assert not np.array_equal(raw(x, t), score_fn(x, t))
    # reading with another evaluation setting (a reader's own choice) says nothing and leaves
    # config.json alone
    saved = (tmp_path / "config.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error", trainer.ConfigChangeWarning)
        trainer.load_score_fn(str(tmp_path), base.override(config, {"eval.num_samples": 9}))
    assert (tmp_path / "config.json").read_text() == saved
    assert os.path.getsize(os.path.join(str(tmp_path), "loss.png")) > 0
    # TensorBoard holds the samples' figure beside the scalars (a PNG under the tag "samples")
    events = b"".join((tmp_path / "tensorboard" / f).read_bytes()
                      for f in os.listdir(tmp_path / "tensorboard"))
    assert b"samples" in events and b"\x89PNG" in events
    assert out["written"][:2] == [str(tmp_path / "checkpoints" / "2"),
                                  str(tmp_path / "samples" / "samples_2.png")]


@pytest.mark.slow
def test_checkpoints_record_the_batches_trained_on_not_the_one_read_ahead(tmp_path):
    """The trainer reads each call's batch one call ahead (transferred while the previous call
    runs); the data state a checkpoint records is that after the batches trained on: 1 and 2
    calls of 2 steps in (an iterator advanced as far in the test), not one batch further."""
    config = tiny(gmm_mlp.get_config(), **TINY_MODEL, **{
        "training.num_train_steps": 4, "training.steps_per_call": 2,
        "training.checkpoint_every": 2, "training.num_devices": 1, "eval.likelihood": False})
    out = trainer.train_and_evaluate(config, str(tmp_path))
    manager = checkpointing.create_manager(str(tmp_path))
    cfg = trainer.parse_config(config)
    for step in (2, 4):
        _, saved = checkpointing.restore_checkpoint(manager, out["state"], step=step)
        it, _ = data.create_iterators(cfg.data, cfg.training.batch_size, cfg.eval.batch_size,
                                      num_devices=1)
        for _ in range(step):
            next(it)
        assert saved == it.state and it.state.index + it.state.epoch > 0, (step, saved)


def _damage(kind, checkpoint):
    """Damages a checkpoint directory as a full disk, a bad copy or a stray edit would."""
    files = sorted(f for f in (checkpoint / "state" / "d").iterdir())
    if kind == "state removed":
        shutil.rmtree(checkpoint / "state" / "d")
    elif kind == "state truncated":
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(10)
    elif kind == "state overwritten":
        for f in files:
            f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    elif kind == "data metadata removed":
        (checkpoint / "data" / "metadata").unlink()
    elif kind == "state metadata truncated":
        with open(checkpoint / "state" / "_METADATA", "r+b") as fh:
            fh.truncate(20)


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_intact_one(tmp_path):
    """Five kinds of damage to the newest checkpoint (step 40): each is moved aside to
    ``40.damaged`` with a warning naming it, the intact step 20 is restored (equal to a restore
    of 20 from the undamaged run), and training resumes from it to 40. A changed config is not
    taken for damage: a field that changes the model, data or objective is refused naming it
    (from the saved config.json), other changes resume with a warning each, and without the
    saved config a checkpoint whose arrays do not fit raises a ValueError; nothing is renamed."""
    config = tiny(gmm_mlp.get_config(), **TINY_MODEL, **{
        "training.num_train_steps": 40, "training.checkpoint_every": 20,
        "training.num_devices": 1, "eval.likelihood": False})
    base_dir = tmp_path / "base"
    out = trainer.train_and_evaluate(config, str(base_dir))
    good, _ = checkpointing.restore_checkpoint(checkpointing.create_manager(str(base_dir)),
                                               out["state"], step=20)
    kinds = ("state removed", "state truncated", "state overwritten", "data metadata removed",
             "state metadata truncated")
    for kind in kinds:
        workdir = tmp_path / kind.replace(" ", "_")
        shutil.copytree(base_dir, workdir)
        _damage(kind, workdir / "checkpoints" / "40")
        with pytest.warns(checkpointing.DamagedCheckpointWarning,
                          match=f"checkpoint {workdir / 'checkpoints' / '40'} is damaged"):
            state, data_state = checkpointing.restore_checkpoint(
                checkpointing.create_manager(str(workdir)), out["state"])
        assert int(state.step) == 20 and data_state is not None, kind
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(good), strict=True):
            np.testing.assert_array_equal(a, b)
        assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "40.damaged"], kind
    resumed = trainer.train_and_evaluate(config, str(workdir))  # the last one, from step 20
    assert resumed["train_loss"].shape == (20,)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "40", "40.damaged"]
    # a changed config: fields that change the model, data or objective are refused by name
    for change, field in (({"model.hidden": 32}, r"model.hidden: 16 -> 32"),
                          ({"training.batch_size": 32}, r"training.batch_size: 16 -> 32"),
                          ({"data.dim": 3}, r"data.dim: 4 -> 3"),
                          ({"loss.name": "ddpm_eps"}, r"loss.name: 'dsm' -> 'ddpm_eps'")):
        with pytest.raises(ValueError, match=f"fields that change the model, its data or its "
                                             f"objective: {field}"):
            trainer.train_and_evaluate(base.override(config, change), str(base_dir))
    # ... others resume, each named in a warning
    longer = base.override(config, {"training.num_train_steps": 42, "optim.lr": 1e-4})
    with pytest.warns(trainer.ConfigChangeWarning) as record:
        assert trainer.train_and_evaluate(longer, str(base_dir))["train_loss"].shape == (2,)
    assert sorted(str(w.message).split("field: ")[1] for w in record
                  if w.category is trainer.ConfigChangeWarning) == [
        "optim.lr: 0.001 -> 0.0001", "training.num_train_steps: 40 -> 42"]
    # without the saved config (an older workdir) the arrays' shapes are still checked
    os.remove(base_dir / "config.json")
    for change in ({"model.hidden": 32}, {"model.num_blocks": 2}):
        with pytest.raises(ValueError, match="does not fit this config's train state"):
            trainer.train_and_evaluate(base.override(longer, change), str(base_dir))
    assert sorted(os.listdir(base_dir / "checkpoints")) == ["20", "40", "42"]


def test_saved_config_fields_added_later_resume_and_the_model_name_is_fixed(tmp_path):
    """A field the saved config.json lacks (added by a newer version) resumes with a warning;
    a changed model name (several names share a config class) is refused like a shape."""
    old = {"data": {}, "loss": {}, "model": {"hidden": 16}, "sde": {}, "training": {"seed": 0}}
    workdirs.save_config(tmp_path, old)
    assert workdirs.check_config(tmp_path, {**old, "model_name": "mlp"}, True) == [
        "model_name: '<absent>' -> 'mlp'"]
    workdirs.save_config(tmp_path, {**old, "model_name": "unet_digits"})
    with pytest.raises(ValueError, match="model_name: 'unet_digits' -> 'unet_mnist'"):
        workdirs.check_config(tmp_path, {**old, "model_name": "unet_mnist"}, True)


@pytest.mark.slow
def test_workdir_lock_refuses_a_second_run_and_takes_over_a_stale_one(tmp_path):
    """A lock held by a live process (this one) refuses a run into the workdir, naming the PID
    and host, before anything is built; a lock of a process that has exited is taken over with
    a warning, and released when the run ends (also when it fails)."""
    config = tiny(gmm_mlp.get_config(), **TINY_MODEL, **{
        "training.num_train_steps": 2, "training.num_devices": 1, "eval.likelihood": False})
    lock = tmp_path / "train.lock"
    host = socket.gethostname()
    lock.write_text(f"{os.getpid()} {host}\n")
    with pytest.raises(RuntimeError, match=f"is in use by process {os.getpid()} on host {host}"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["train.lock"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(f"{gone.pid} {host}\n")
    with pytest.warns(UserWarning, match=f"taking over the lock .* of process {gone.pid}"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert not lock.exists()
    with workdirs.WorkdirLock(tmp_path) as held:
        assert lock.read_text().split() == [str(os.getpid()), host] and held.held
    assert not lock.exists()


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_before_a_bad_checkpoint(tmp_path):
    """lr = 1e30: the loss becomes NaN within a few steps; the run stops with a
    FloatingPointError naming the step and the intact checkpoint, every checkpoint on disk holds
    finite parameters, and a NaN metric is written to JSON as null (valid JSON)."""
    config = tiny(gmm_mlp.get_config(), **TINY_MODEL, **{
        "training.num_train_steps": 40, "training.steps_per_call": 1, "training.log_every": 1,
        "training.checkpoint_every": 2, "training.num_devices": 1, "eval.likelihood": False,
        "optim.lr": 1e30, "optim.grad_clip": None})
    with pytest.raises(FloatingPointError, match=r"at step \d+ is not finite; the run stopped "
                                                 r"before saving it \(newest checkpoint: "):
        trainer.train_and_evaluate(config, str(tmp_path))
    manager = checkpointing.create_manager(str(tmp_path))
    assert manager.all_steps() and max(manager.all_steps()) < 40
    target = trainer.create_train_state(
        jax.random.PRNGKey(0), models.get_model("mlp", hidden=16, num_blocks=1), (4,),
        trainer.create_optimizer(trainer.parse_config(config).optim)[0])
    for saved in manager.all_steps():
        state, _ = checkpointing.restore_checkpoint(manager, target, step=saved)
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    nan = trainer.evaluation._json_number(float("nan"))
    assert json.loads(json.dumps({"a": nan})) == {"a": None}


def test_ema_decay_is_the_warm_up_schedule():
    """``min(rate, (1 + s) / (w + s))`` at each step, the constant rate without warm-up, and the
    weight left on the initial parameters after n updates is the closed form
    ``n! (w - 1)! / (w - 1 + n)!`` while the warm-up is below the rate."""
    steps = np.arange(0, 20_000, 7)
    for rate, w in ((0.999, 10), (0.9999, 10), (0.99, 3)):
        got = np.asarray(trainer.ema_decay(steps, rate, w), np.float64)
        np.testing.assert_allclose(got, np.minimum(rate, (1 + steps) / (w + steps)), rtol=1e-6)
    assert trainer.ema_decay(123, 0.999, None) == 0.999
    n, w = 300, 10
    prod = np.prod(np.asarray(trainer.ema_decay(np.arange(n), 0.999, w), np.float64))
    closed = math.exp(math.lgamma(n + 1) + math.lgamma(w) - math.lgamma(w + n))
    np.testing.assert_allclose(prod, closed, rtol=1e-4)
    assert closed < 1e-15 < 0.7 < 0.999 ** n  # the plain EMA keeps 74% of the initial weights


@pytest.mark.slow
def test_short_run_ema_is_as_good_as_the_raw_parameters(tmp_path):
    """The issue's 300-step run (gmm_mlp, batch 64): with the default warm-up the EMA's
    probability-flow NLL of 64 fresh points of the data's mixture is within 10% of the raw
    parameters'; the plain EMA (no warm-up) is not (mostly the initial weights)."""
    nll = {}
    for warmup in (10, None):
        config = gmm_mlp.get_config("steps=300,batch_size=64")
        config.optim.ema_warmup = warmup
        config.training.eval_every = config.training.sample_every = 1000
        config.training.checkpoint_every, config.training.num_devices = 300, 1
        config.eval.num_samples, config.eval.num_batches = 16, 1
        config.eval.likelihood, config.sampling.num_steps = False, 10
        out = trainer.train_and_evaluate(config, str(tmp_path / str(warmup)))
        if not nll:  # one compilation for every parameter set (params are arguments)
            sde, model = out["sde"], models.get_model(trainer.parse_config(config).model)
            x = out["dataset"].gmm.sample(jax.random.key(5), 64).astype(jnp.float32)
            nll_fn = jax.jit(lambda params, sde=sde, model=model, x=x: -sde_lib.log_likelihood(
                jax.random.key(6), sde, models.get_score_fn(sde, model, params, "eps"),
                x, rtol=1e-4, atol=1e-4)[0].mean())
        state = out["state"]
        nll[warmup] = {"ema": float(nll_fn(state.ema_params)), "raw": float(nll_fn(state.params))}
    assert abs(nll[10]["ema"] / nll[10]["raw"] - 1) < 0.10, nll
    assert abs(nll[None]["ema"] / nll[None]["raw"] - 1) > 0.10, nll


@pytest.mark.slow
@pytest.mark.parametrize("module", ["trainer.main", "experiments.digits"])
def test_help_exits_0_and_lists_the_flags(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, env=_env(), timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--workdir" in done.stdout and "--config" in done.stdout
    if module == "experiments.digits":  # a module's settings with their defaults
        assert "--config.experiment.<field>=value" in done.stdout
        assert "  num_samples = 297" in done.stdout and "networks: " in done.stdout
    else:
        assert "--num_samples" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, field, hint", [
    (["trainer.main", "--config", "experiments/configs/gmm_mlp.py",
      "--config.training.batch_sizee=3"], "--config.training.batch_sizee", "batch_size"),
    (["experiments.digits", "--config.experiment.num_samplez=3"],
     "--config.experiment.num_samplez", "num_samples")])
def test_unknown_config_field_is_one_line_naming_it(args, field, hint, tmp_path):
    done = subprocess.run([sys.executable, "-m", *args, f"--workdir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and f'Did you mean "{hint}"' in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_main_launcher_trains_resumes_evaluates_and_samples(tmp_path, capsys, monkeypatch):
    from trainer import main

    workdir = str(tmp_path / "run")
    flat = {"training.num_train_steps": 4, "training.batch_size": 16, "training.log_every": 1,
            "training.checkpoint_every": 2, "optim.warmup_steps": 1, "eval.batch_size": 16,
            "eval.num_batches": 1, "eval.likelihood_examples": 4, "eval.num_probes": 2,
            "eval.num_samples": 4,
            "eval.rtol": 1e-3, "eval.atol": 1e-3, "sampling.num_steps": 5,
            "training.rng_block_size": 2, **TINY_MODEL}
    base_argv = ["main", f"--config={os.path.join(ROOT, 'experiments/configs/gmm_mlp.py')}",
                 f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flat.items()]
    base_argv.append("--config.model.dropout=0.25")  # a model field gmm_mlp.py leaves out

    def launch(*extra):
        argv = base_argv + list(extra)
        monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides there
        main.FLAGS.unparse_flags()
        for name in [n for n in main.FLAGS if n.startswith("config.")]:
            delattr(main.FLAGS, name)  # the override flags of the previous parse
        main.cli.parse_flags(argv, workdir_config=True)  # as main.run parses
        main.main(["main"])
        return capsys.readouterr().out

    out = launch()
    assert "nll_bits_per_dim" in out
    with open(os.path.join(workdir, "eval_4.json")) as f:
        metrics = json.load(f)
    check_run_outputs(workdir, 4, {k: v for k, v in metrics.items() if k != "step"})
    assert metrics["nll_bits_per_dim"] > 0.0 and metrics["sample_nfe"] == 5
    assert 0.0 < metrics["nll_bits_per_dim_se"] < metrics["nll_bits_per_dim"]
    assert "nll_bits_per_dim_se = " in out and "standard error over the likelihood's" in out
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["dropout"] == 0.25
    # a second train run in the same workdir with more steps resumes from step 4
    assert f"resumed {workdir} from step 4" in launch("--config.training.num_train_steps=6")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
    assert "test_loss = " in launch("--config.training.num_train_steps=6", "--mode=eval")
    assert (f"4 samples of shape (4,); wrote:\n  {workdir}/samples/sample_mode_6.png\n  "
            f"{workdir}/samples/sample_mode_6.npy"
            in launch("--config.training.num_train_steps=6", "--mode=sample"))
    x = np.load(os.path.join(workdir, "samples", "sample_mode_6.npy"))
    assert x.shape == (4, 4) and np.all(np.isfinite(x))
    assert "7 samples of shape (4,)" in launch("--config.training.num_train_steps=6",
                                               "--mode=sample", "--num_samples=7")
    # without --config: the workdir's config.json, and an .npz wherever asked
    out = tmp_path / "s.npz"
    base_argv[:] = ["main", f"--workdir={workdir}"]
    assert f"wrote:\n  {out}" in launch("--mode=sample", f"--out={out}")
    assert np.load(out)["samples"].shape == (4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("module,fields,shape", [
    (gmm_transformer, {"model.dim": 16, "model.depth": 1, "model.num_heads": 2}, (2,)),
    (cifar10, {"model.ch": 8, "model.ch_mult": (1, 2), "model.num_res_blocks": 1,
               "model.attn_resolutions": (16,), "eval.likelihood": False}, (32, 32, 3)),
], ids=["gmm_transformer", "cifar10"])  # digits: test_experiment_modules.test_digits; mnist's
# U-Net: test_models (the loop is the same; the 28x28 case cost 43 s of the slow tier)
def test_each_config_family_trains_checkpoints_and_evaluates(module, fields, shape, tmp_path,
                                                             monkeypatch):
    config = tiny(module.get_config(), **fields)
    if config.data.name == "cifar10":  # not prepared here: random 8-bit images
        monkeypatch.setattr(trainer.run, "create_iterators", lambda cfg, *a, **k: _fake_iterators(
            shape, *a, **k))
    workdir = str(tmp_path / "run")
    out = trainer.train_and_evaluate(config, workdir)
    assert out["train_loss"].shape == (4,) and np.all(np.isfinite(out["train_loss"]))
    check_run_outputs(workdir, 4, out["eval"])
    x = np.load(os.path.join(workdir, "samples", "samples_4.npy"))
    assert x.shape == (4, *shape) and np.all(np.isfinite(x))
    restored, _ = checkpointing.restore_checkpoint(
        checkpointing.create_manager(workdir), out["state"])
    for a, b in zip(jax.tree.leaves(out["state"]), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def _fake_iterators(shape, global_batch_size, eval_batch_size=None, **kwargs):
    state = kwargs.pop("state", data.DataState())
    return (data.BatchIterator(fake_images(shape, seed=1), global_batch_size, shuffle=True,
                               state=state, **kwargs),
            data.BatchIterator(fake_images(shape, seed=2), eval_batch_size or global_batch_size,
                               shuffle=False, **kwargs))


@pytest.mark.slow
def test_pmap_over_8_devices_matches_1_device(tmp_path):
    assert jax.local_device_count() == 8
    out = {}
    for n in (8, 1):
        config = tiny(gmm_mlp.get_config(), **{
            "data.dim": 4, "model.hidden": 32, "model.num_blocks": 1, "training.batch_size": 64,
            "training.rng_block_size": 8, "eval.batch_size": 64,
            "training.num_train_steps": 8, "training.checkpoint_every": 8,
            "training.num_devices": n, "eval.likelihood": False})
        out[n] = trainer.train_and_evaluate(config, str(tmp_path / f"d{n}"))
    assert out[8]["train_loss"].shape == (8,)
    np.testing.assert_allclose(out[8]["train_loss"], out[1]["train_loss"], rtol=1e-5, atol=1e-5)
    init = jax.tree.leaves(trainer.create_train_state(
        jax.random.PRNGKey(0), models.get_model("mlp", hidden=32, num_blocks=1), (4,),
        trainer.create_optimizer(trainer.parse_config(config).optim)[0]).params)
    for a, b, p0 in zip(jax.tree.leaves(out[8]["state"].params),
                        jax.tree.leaves(out[1]["state"].params), init, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert not np.array_equal(np.asarray(a), np.asarray(p0))  # 8 Adam steps moved them


@pytest.mark.slow
def test_steps_per_call_scan_matches_one_step_per_call(tmp_path):
    out = {}
    for k in (1, 4):
        config = tiny(gmm_mlp.get_config(), **{
            "data.dim": 4, "model.hidden": 16, "model.num_blocks": 1,
            "training.num_train_steps": 8, "training.checkpoint_every": 4,
            "training.steps_per_call": k, "eval.likelihood": False})
        out[k] = trainer.train_and_evaluate(config, str(tmp_path / f"k{k}"))
    np.testing.assert_allclose(out[4]["train_loss"], out[1]["train_loss"], rtol=1e-5,
                               atol=1e-6)
    for a, b in zip(jax.tree.leaves(out[4]["state"].params),
                    jax.tree.leaves(out[1]["state"].params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _blockwise_reference(params, model, loss_fn, step_key, x, index, block_size, mode):
    """Each block's loss with its own keys and its own network call (a vmap over blocks)."""
    def one(k, xk):
        k_loss, k_dropout = jax.random.split(jax.random.fold_in(step_key, k))
        model_fn = models.get_model_fn(model, params, mode, k_dropout if mode else None)
        return loss_fn(k_loss, model_fn, xk)

    blocks = x.reshape(-1, block_size, *x.shape[1:])
    return jax.vmap(one)(index[::block_size] // block_size, blocks).reshape(-1)


def _whole_batch_matches_blocks(names, halves=True):
    sde = sde_lib.VPSDE(N=50)
    model = models.get_model("mlp", hidden=16, num_blocks=1)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3)), jnp.ones(1))["params"]
    x = jax.random.normal(jax.random.key(1), (16, 3))
    index, key = jnp.arange(16), jax.random.key(2)
    for name in names:
        cfg = {"name": name}
        if name in ("ssm", "ssm_vr"):
            cfg["num_projections"] = 2
        if name == "esm":
            cfg["divergence"] = "rademacher"
        loss_fn = sde_lib.get_loss_fn(sde, cfg)

        @jax.jit
        def both(x, index, mode=True, loss_fn=loss_fn):
            return (trainer.example_losses(params, model, loss_fn, key, x, index, 4, train=mode),
                    _blockwise_reference(params, model, loss_fn, key, x, index, 4, mode))

        got, want = both(x, index)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
        if halves:
            half, _ = both(x[8:], index[8:])
            np.testing.assert_allclose(half, got[8:], rtol=1e-10, err_msg=name)


@pytest.mark.slow
def test_example_losses_draw_per_block_and_evaluate_the_whole_batch():
    """``example_losses`` (draws per block, one network call on the whole batch) gives each
    block's own loss, computed in the test by a vmap over blocks with a network call per block
    (float64, 1e-10), here sliced score matching (time, noise and probes, the probes drawn
    ``(num, B, *D)``: the draws' batch axes are merged right)."""
    _whole_batch_matches_blocks(["ssm"], halves=False)


@pytest.mark.slow
def test_example_losses_whole_batch_for_every_loss():
    """As above for every loss of the registry; and the losses of a device's half of the batch
    are those rows of the whole batch's (split-invariant)."""
    _whole_batch_matches_blocks(sorted(sde_lib.losses.LOSSES))


def _check_uses_dropout(cases):
    shapes = {"unet": (4, 4, 1), "mlp": (3,)}
    for name, fields, expected in cases:
        model = models.get_model(name, **fields)
        params = jax.eval_shape(lambda m=model, s=shapes[name]: m.init(
            jax.random.key(0), jnp.zeros((1, *s)), jnp.ones(1))["params"])
        assert trainer.uses_dropout(model, params, shapes[name]) == expected, (name, fields)


@pytest.mark.slow
def test_dropout_masks_belong_to_examples_and_the_network_runs_once():
    """``uses_dropout``: a positive dropout rate draws random numbers in training (the U-Net's
    default 0.1, an MLP at 0.2), a zero rate does not. ``example_losses`` runs such a network
    once on the whole batch with each example's mask drawn from the step's dropout key and the
    example's global position: equal to a reference that applies the network per block (a vmap
    over blocks, each with its rows' positions), the losses of a device's half of the batch are
    those rows of the whole batch's (split-invariant), and dropout changes the losses."""
    _check_uses_dropout([("unet", dict(ch=8, ch_mult=(1,), num_res_blocks=1,
                                       attn_resolutions=()), True),
                         ("mlp", dict(hidden=8, num_blocks=1, dropout=0.2), True),
                         ("mlp", dict(hidden=8, num_blocks=1), False)])
    dropped = models.get_model("mlp", hidden=8, num_blocks=1, dropout=0.5)
    params = dropped.init(jax.random.key(0), jnp.zeros((1, 3)), jnp.ones(1))["params"]
    loss_fn = sde_lib.get_loss_fn(sde_lib.VPSDE(), {"name": "dsm"})
    x, index, key = jax.random.normal(jax.random.key(1), (8, 3)), jnp.arange(8), jax.random.key(2)
    k_dropout = jax.random.fold_in(key, DROPOUT_STREAM)

    def per_block(x, index):
        def one(k, xk, ik):
            model_fn = models.get_model_fn(dropped, params, True, k_dropout, example_ids=ik)
            return loss_fn(jax.random.split(jax.random.fold_in(key, k))[0], model_fn, xk)
        return jax.vmap(one)(index[::2] // 2, x.reshape(4, 2, 3), index.reshape(4, 2)).ravel()

    got, half, want, without = jax.jit(lambda x: (
        trainer.example_losses(params, dropped, loss_fn, key, x, index, 2),
        trainer.example_losses(params, dropped, loss_fn, key, x[4:], index[4:], 2),
        per_block(x, index),
        trainer.example_losses(params, dropped, loss_fn, key, x, index, 2, train=False)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(half, got[4:], rtol=1e-10)
    assert not np.allclose(got, without)


def test_convolutional_models_unroll_their_scan_on_cpu():
    """scan_unroll: a U-Net on CPU unrolls its K steps per call (XLA:CPU's slow path for
    convolution gradients in a loop), the MLP and the Transformer keep the loop, K = 1 is 1."""
    cases = {"unet": ((4, 4, 1), True, dict(ch=8, ch_mult=(1,), num_res_blocks=1,
                                              attn_resolutions=())),
             "mlp": ((4,), False, dict(hidden=8, num_blocks=1)),
             "transformer": ((4, 4, 1), False, dict(dim=8, depth=1, num_heads=2))}
    for name, (shape, conv, fields) in cases.items():
        model = models.get_model(name, **fields)
        params = jax.eval_shape(lambda m=model, s=shape: m.init(
            {"params": jax.random.key(0)}, jnp.zeros((1, *s)), jnp.ones((1,)))["params"])
        assert trainer.scan_unroll(model, params, shape, 4) == (4 if conv else 1), name
        assert trainer.scan_unroll(model, params, shape, 1) == 1


@pytest.mark.parametrize("change,message", [
    ({"model.name": "resnet"}, "model name must be one of"),
    ({"loss.name": "nce"}, r"loss.name must be one of \[.*'dsm'"),
    ({"sampling.num_steps": 0}, "bad sampling config: num_steps"),
    ({"training.batch_size": 12}, "divisible by the number of devices"),
    ({"training.batch_size": 64, "training.rng_block_size": 16},
     r"divisible by the number of devices \(8 = 1 processes x 8\) times "
     r"training.rng_block_size \(16\)"),
    ({"optim.lr": 0.0}, "optim.lr must be a number > 0"),
    ({"sampling.method": "rk4"}, "sampling.method must be one of"),
    ({"training.num_train_steps": 10, "training.steps_per_call": 4}, "multiple of"),
])
def test_bad_config_is_rejected_before_anything_runs(change, message, tmp_path):
    config = tiny(gmm_mlp.get_config(), **change)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        trainer.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_every_trainer_config_file_validates():
    """The trainer's config files (the image ones train only in the slow tier, or not at all
    here) pass every check of parse_config and the devices, without compiling."""
    for module in (base, gmm_mlp, gmm_transformer, digits_unet, mnist, cifar10):
        trainer.validate_config(module.get_config())


def test_any_model_field_is_overridable_on_the_command_line():
    """``--config.model.<field>`` for a field the config file leaves out (and nested ones) is
    taken out of argv and applied after the file; a misspelled one names the closest field; the
    values parse as the shortcuts do (1e3 is an int, tuples are literals)."""
    from trainer import cli
    argv = ["main", "--config=x.py", "--config.model.dropout=0.2", "--config.model.name=mlp",
            "--config.model.time_embedding.kind=fourier", "--config.training.seed=3",
            "--config.model.hidden=1e2"]
    taken = cli.take_model_overrides(argv)
    assert taken == [("dropout", "0.2"), ("time_embedding.kind", "fourier"), ("hidden", "1e2")]
    assert argv == ["main", "--config=x.py", "--config.model.name=mlp",
                    "--config.training.seed=3"]
    config = gmm_mlp.get_config()
    config.lock()
    cli.apply_model_overrides(config, taken)
    cli.check_model_section(config)
    model = trainer.parse_config(config).model
    assert (model.dropout, model.hidden, model.time_embedding.kind) == (0.2, 100, "fourier")
    assert cli.parse_text("(1, 2)") == (1, 2) and cli.parse_text("none") is None
    argv = ["m", "--config.training.num_train_steps=1e3", "--config.optim.lr=1e-3",
            "--config.optim.lr=2.5E1", "--config.data.name=ring", "--other=1e3"]
    cli.e_notation_to_int(argv)
    assert argv == ["m", "--config.training.num_train_steps=1000", "--config.optim.lr=1e-3",
                    "--config.optim.lr=25", "--config.data.name=ring", "--other=1e3"]
    with pytest.raises(ValueError, match=r"unknown field 'model.dropoutt' for model 'mlp'; did "
                                         r"you mean 'dropout'\?"):
        cli.apply_model_overrides(config, [("dropoutt", "0.1")])
        cli.check_model_section(config)
    config = gmm_mlp.get_config()
    cli.apply_model_overrides(config, [("hidden", "0")])
    with pytest.raises(ValueError, match=r"config.model \('mlp'\): hidden must be"):
        cli.check_model_section(config)


def test_config_shortcuts_and_unknown_keys():
    config = gmm_mlp.get_config("sde=ve,sampler=pf_ode_heun,steps=10,lr=0.01")
    assert (config.sde.name, config.sampling.method, config.training.num_train_steps,
            config.optim.lr) == ("ve", "pf_ode_heun", 10, 0.01)
    config = gmm_mlp.get_config("steps=1e3,lr=1e-3,batch_size=2.5e2")  # e-notation
    assert (config.training.num_train_steps, config.optim.lr, config.training.batch_size) == (
        1000, 0.001, 250)
    assert isinstance(config.training.num_train_steps, int)
    with pytest.raises(ValueError, match="unknown config field"):
        base.get_config("learning_rate=1")
    config = base.get_config()
    config.optim.momentum = 0.9
    with pytest.raises(ValueError, match=r"unknown optim config keys \['momentum'\]"):
        trainer.parse_config(config)


# --------------------------------------------------------------------------------------------
# subprocesses: kill and resume, two processes


def _command(out, workdir, devices, spec, *dist):
    return [sys.executable, WORKER, str(out), str(workdir), str(devices), json.dumps(spec),
            *map(str, dist)]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT
    return env


def _run(out, workdir, devices=4, spec=TINY, *dist):
    subprocess.run(_command(out, workdir, devices, spec, *dist), check=True, env=_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return dict(np.load(out))


def _kill_at(line, workdir, spec, log):
    """Starts a run and SIGKILLs it as soon as it prints ``line``."""
    with open(log, "w") as err:
        proc = subprocess.Popen(_command(workdir / "unused.npz", workdir, 4, spec),
                                env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for text in proc.stdout:
                if text.strip() == line:
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, open(log).read()[-3000:]


def _leaves(result):
    return [result[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in result))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("uninterrupted")
    return _run(path / "out.npz", path / "run")


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_parameters(uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    # 1. SIGKILL right after the checkpoint of step 4 is on disk
    _kill_at("CHECKPOINT 4", workdir, {**TINY, "sleep_after_checkpoint": 600},
             tmp_path / "log1")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
    assert _logged_steps(workdir) == [1, 2, 3, 4]  # the loss of step 4 survived the kill
    # 2. resume from 4, SIGKILL during the save of step 8 (its files half written)
    _kill_at("SAVING 8", workdir, {**TINY, "hang_in_save_at": 8}, tmp_path / "log2")
    entries = sorted(os.listdir(workdir / "checkpoints"))
    assert "4" in entries and "8" not in entries
    assert any("tmp" in e for e in entries), entries  # the half-written save is still there
    assert checkpointing.create_manager(str(workdir)).latest_step() == 4
    # 3. resume from 4 again and finish: bit for bit the uninterrupted run
    resumed = _run(tmp_path / "out.npz", workdir)
    assert resumed["train_loss"].shape == (8,)  # steps 5..12 only
    np.testing.assert_array_equal(resumed["train_loss"], uninterrupted["train_loss"][4:])
    for a, b in zip(_leaves(resumed), _leaves(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)
    # the temporary directory of the interrupted save is gone
    assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "4", "8"]
    assert _logged_steps(workdir) == list(range(1, 13))  # every step once, none replayed


def _logged_steps(workdir):
    """The steps of the train loss rows of ``metrics.csv``, in order."""
    with open(workdir / "metrics.csv") as f:
        rows = [line.strip().split(",") for line in f.readlines()[1:]]
    return [int(step) for step, name, _ in rows if name == "train/loss"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_same_steps_as_one(uninterrupted, tmp_path):
    coord = f"127.0.0.1:{_free_port()}"
    procs, logs = [], []
    for pid in range(2):
        logs.append(open(tmp_path / f"log{pid}", "w"))
        procs.append(subprocess.Popen(
            _command(tmp_path / f"out{pid}.npz", tmp_path / "run", 2, TINY, coord, 2, pid),
            env=_env(), stdout=subprocess.DEVNULL, stderr=logs[-1]))
    try:
        for pid, proc in enumerate(procs):
            assert proc.wait(timeout=300) == 0, open(tmp_path / f"log{pid}").read()[-3000:]
    finally:
        for proc, log in zip(procs, logs, strict=True):
            proc.kill()
            log.close()
    result = dict(np.load(tmp_path / "out0.npz"))  # process 0 writes the state
    assert int(result["process_count"]) == 2
    np.testing.assert_allclose(result["train_loss"], uninterrupted["train_loss"], rtol=1e-5)
    for a, b in zip(_leaves(result), _leaves(uninterrupted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _signal_at(line, procs, signals, watch=0, log=None):
    """Sends ``signals`` (in order) to ``procs[watch]`` once it prints ``line``, each after the
    process wrote that it received the previous one to ``log`` (two signals sent at once reach
    Python's handler as one); returns the processes' exit codes."""
    for text in procs[watch].stdout:
        if text.strip() == line:
            for k, signum in enumerate(signals):
                if k:
                    deadline = time.monotonic() + 120
                    while "received" not in log.read_text() and time.monotonic() < deadline:
                        time.sleep(0.05)
                procs[watch].send_signal(signum)
            break
    return [proc.wait(timeout=300) for proc in procs]


@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGTERM, signal.SIGTERM]],
                         ids=["sigterm", "twice"])  # SIGINT: test_integrity, in process
def test_a_signal_saves_and_the_resumed_run_is_the_uninterrupted_one(uninterrupted, tmp_path,
                                                                      signals):
    """SIGTERM or SIGINT just after the checkpoint of step 4: step 5 finishes, its checkpoint
    is saved, the lock is released and the run exits with 128 + the signal and one line; the
    resumed run ends bit for bit as the uninterrupted one. A second signal ends it at once."""
    workdir = tmp_path / "run"
    with open(tmp_path / "log", "w") as err:
        proc = subprocess.Popen(_command(tmp_path / "unused.npz", workdir, 4,
                                         {**TINY, "sleep_after_checkpoint": 5}),
                                env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            code, = _signal_at("CHECKPOINT 4", [proc], signals, log=tmp_path / "log")
        finally:
            proc.kill()
    log = (tmp_path / "log").read_text()
    if len(signals) == 2:  # at once: no step finished, nothing saved
        assert code == -signal.SIGTERM, log[-3000:]
        assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
        return
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert f"error: stopped at step 5 on SIGTERM, saved {workdir}/checkpoints/5" in log
    assert "Traceback" not in log
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "5"]
    assert not (workdir / "train.lock").exists()
    assert _logged_steps(workdir) == [1, 2, 3, 4, 5]
    resumed = _run(tmp_path / "out.npz", workdir)
    np.testing.assert_array_equal(resumed["train_loss"], uninterrupted["train_loss"][5:])
    for a, b in zip(_leaves(resumed), _leaves(uninterrupted), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _logged_steps(workdir) == list(range(1, 13))


@pytest.mark.slow
def test_two_processes_stop_together_when_one_is_signalled(uninterrupted, tmp_path):
    """SIGTERM to process 0 only: both processes agree to stop after the same call, save the
    same checkpoint (step 6: the agreement is read one call late) and exit 143; both resumed
    end where one uninterrupted process does."""
    def start(spec, out):
        coord = f"127.0.0.1:{_free_port()}"
        return [subprocess.Popen(
            _command(tmp_path / f"{out}{pid}.npz", tmp_path / "run", 2, spec, coord, 2, pid),
            env=_env(), stdout=subprocess.PIPE if pid == 0 else subprocess.DEVNULL,
            stderr=open(tmp_path / f"log{pid}", "w"), text=True) for pid in range(2)]

    procs = start({**TINY, "sleep_after_checkpoint": 2}, "unused")
    try:
        codes = _signal_at("CHECKPOINT 4", procs, [signal.SIGTERM])
    finally:
        for proc in procs:
            proc.kill()
    logs = [(tmp_path / f"log{pid}").read_text() for pid in range(2)]
    assert codes == [143, 143], [log[-2000:] for log in logs]
    for log in logs:
        assert "stopped at step 6 on SIGTERM" in log, log[-2000:]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4", "6"]
    procs = start(TINY, "out")
    try:
        assert [proc.wait(timeout=300) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            proc.kill()
    result = dict(np.load(tmp_path / "out0.npz"))
    assert result["train_loss"].shape == (6,)
    for a, b in zip(_leaves(result), _leaves(uninterrupted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
