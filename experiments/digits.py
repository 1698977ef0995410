r"""Digits: the tiny U-Net and a patch Transformer on the embedded 8x8 handwritten digits
(scikit-learn's, via tfds), with a sample-quality metric, baselines and inverse problems.

Trains ``unet_digits`` and ``transformer_digits`` (``experiment.networks``) with DDPM's eps loss
on the DDPM chain (``DiscreteVPSDE``) on the 1,500 training digits
(``experiments/configs/digits.py``, trained by ``trainer`` in ``<workdir>/model`` and
``<workdir>/model_transformer_digits``, checkpointed and resumable; a second run in the same
workdir reuses them), then on the 297 test digits, for each network:

* **bits/dim** with their standard errors over the test digits: the probability-flow NLL
  (``sde_lib.log_likelihood``, Hutchinson probes, uniform dequantization of the 17 grey levels in
  bins centred on the training values), the DDPM negative ELBO with the ``beta`` and the
  ``beta_tilde`` reverse variances (discretized decoder, 17 bins), next to the baselines every
  model must beat: the uniform code (``log2 17 = 4.09``) and the independent-pixel model fitted
  on the training digits (``experiments.digits_metric.PixelModel``); ``digits.csv/md``;
* **bits/dim against NFE**: the PF-ODE NLL of ``nfe / 2`` fixed Heun steps (uniform in log-SNR)
  and the bound of the
  ``nfe``-step strided chain that ``ddpm_ancestral`` samples at that NFE (its own bits/dim),
  with both variances (``likelihood_vs_nfe.csv/md/png``);
* **the held-out loss curve** from the trainer's evaluations (``loss.csv``, ``loss.png``);
* **sample quality against NFE** for every sampler: the Frechet distance of a small digit
  classifier's features (``experiments.digits_metric``, trained on the training digits on first
  use and cached in ``<workdir>/classifier``; its test accuracy is reported) between
  ``num_samples`` samples and the test digits, with its bootstrap sd; the class histogram's
  total-variation distance to uniform; the floor (as many training digits against the same test
  digits, mean +- sd over draws) and the independent-pixel model's samples as reference rows
  (``quality.csv/md``, ``quality_vs_nfe.png``), and a grid of samples per sampler at the
  smallest and largest NFE (``samples.png``);
* **inverse problems** (the first network) on ``num_inverse`` test digits: inpainting (the
  bottom half missing), super-resolution (2x2 average pooling observed) and denoising
  (``sigma_y = 0.2``): projection
  (noiseless tasks), DPS with Chung et al.'s normalised step at each ``zeta'``, PiGDM, against
  the baselines of the mean training image, nearest-neighbour completion (the training digit
  closest to the observation) and the observation itself (super-resolution: the block means
  upsampled; denoising: the noisy image); mean squared error of the unobserved part
  (inpainting) or of the whole image, with standard errors over the digits (``inverse.csv/md``,
  ``inverse.png``). A posterior sample's expected error is twice the posterior mean's (the
  MMSE), so the samplers' rows carry that factor against point estimates.

Run: ``python -m experiments.digits --workdir runs/digits``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import models
import sde_lib
import trainer
from experiments import common, digits_metric
from trainer import cli, data, reporting

# the inverse problems' tasks: (name, noise sd of the observation)
TASKS = (("inpainting", 0.0), ("super-resolution", 0.0), ("denoising", 0.2))


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The ``experiment`` section. methods: samplers of the quality table; nfes: their NFE
    targets; num_samples: samples per sampler and NFE (and training digits of the floor);
    num_test: test digits for the likelihoods; num_inverse: test digits for the inverse
    problems; inverse_steps: sampler steps there; zetas: DPS's normalised step sizes; tasks:
    the inverse problems (of ``TASKS``); networks: ``models.MODELS`` names, each trained with the
    config's loss and training (the first in ``<workdir>/model``, the others in
    ``<workdir>/model_<name>``); seed: of the evaluation."""

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

    def __post_init__(self):
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
        for name in ("num_test", "num_inverse"):
            if not 1 <= getattr(self, name) <= 297:
                raise ValueError(f"{name} must be in 1 .. 297 (the test digits), got "
                                 f"{getattr(self, name)!r}")
        if not 2 <= self.num_samples <= 1500:
            raise ValueError(f"num_samples must be in 2 .. 1500 (the training digits of the "
                             f"floor), got {self.num_samples!r}")
        if self.inverse_steps < 1:
            raise ValueError(f"inverse_steps must be >= 1, got {self.inverse_steps!r}")
        unknown = sorted(set(self.tasks) - {t for t, _ in TASKS})
        if unknown:
            raise ValueError(f"tasks {unknown} are not tasks; valid: {[t for t, _ in TASKS]}")
        if not self.zetas or min(self.zetas) <= 0:
            raise ValueError(f"zetas must be positive, got {self.zetas!r}")


def load_images(data_config: data.DataConfig, split: str) -> tuple[np.ndarray, int]:
    """All images of a digits split as integer levels ``(n, 8, 8, 1)`` and the number of levels."""
    ds = data.load_dataset(data_config, split)
    v = np.stack([r["x"] for r in ds.source.__getitems__(list(range(len(ds))))])
    return v.astype(np.int32), ds.num_levels


def _se(values) -> float:
    """Standard error of the mean over the digits (nan for one)."""
    values = np.asarray(values)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


def _grid(rows_of_images, titles, plt):
    """Rows of 8x8 images, each row labelled by its title, with one grey-scale colour bar."""
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
    return [{"network": "-", "model": "uniform code", "bits_per_dim": math.log2(levels),
             "se": 0.0, "nfe": 0},
            {"network": "-", "model": "independent pixels (fitted on train)",
             "bits_per_dim": float(pixel.mean()), "se": _se(pixel), "nfe": 0},
            {"network": "-", "model": "closed form: what variance beta costs over beta_tilde",
             "bits_per_dim": beta_variance_cost(sde), "se": 0.0, "nfe": 0}]


def image_range(levels: int) -> tuple[float, float]:
    half = 1.0 / (levels - 1)  # bins of width 2 / (L - 1) centred on the levels
    return (-1.0 - half, 1.0 + half)


def likelihood_rows(rng, sde, score_fn, v_test, levels, network: str,
                    nfes: tuple[int, ...] = ()) -> tuple[list[dict], list[dict]]:
    """Bits/dim of the test digits (mean and standard error over them) under a network: the
    PF-ODE NLL (adaptive Tsit5) and the DDPM ELBO with both reverse variances over the whole
    chain; and at each NFE target the PF-ODE NLL of ``nfe / 2`` fixed Heun steps (uniform in
    log-SNR; the same dequantization and Hutchinson probes as the adaptive solve; not a bound,
    it can fall below the converged value at low NFE) and the ELBO of the
    ``nfe``-step strided chain that ``ddpm_ancestral`` samples at that NFE (its own bound)."""
    k_deq, k_ll, k_elbo = jax.random.split(rng, 3)
    D = math.prod(v_test.shape[1:])
    data_range = image_range(levels)
    x_deq = sde_lib.uniform_dequantize(k_deq, v_test, data_range, num_bins=levels)
    x_test = jnp.asarray(data.scale_images(v_test, levels))

    def nll(**options):
        logp, nfe = sde_lib.log_likelihood(k_ll, sde, score_fn, x_deq, divergence="rademacher",
                                           **options)
        return np.asarray(sde_lib.bits_per_dim(logp, D, data_range, num_bins=levels)), int(nfe)

    def elbo(variance, num_steps=None):
        return np.asarray(sde_lib.ddpm_negative_elbo(k_elbo, sde, score_fn, x_test,
                                                     variance=variance, num_bins=levels,
                                                     num_steps=num_steps).bpd)

    bar = common.progress(desc=f"{network}: bits/dim", total=3 + len(nfes), unit="solve")
    bpd, nfe = nll(rtol=1e-4, atol=1e-4)
    bar.update(1)
    rows = [{"network": network, "model": "PF-ODE NLL", "bits_per_dim": float(bpd.mean()),
             "se": _se(bpd), "nfe": nfe}]
    for variance in ("beta", "beta_tilde"):
        b = elbo(variance)
        bar.update(1)
        rows.append({"network": network, "model": f"DDPM negative ELBO, variance {variance}",
                     "bits_per_dim": float(b.mean()), "se": _se(b), "nfe": sde.N})
    by_nfe = []
    for target in nfes:
        bar.update(1)
        bpd, nfe = nll(solver="heun", num_steps=max(target // 2, 1), time_grid="logsnr")
        by_nfe.append({"network": network, "method": "PF-ODE NLL, Heun steps (log-SNR grid)",
                       "nfe_target": target, "nfe": nfe, "bits_per_dim": float(bpd.mean()),
                       "se": _se(bpd)})
        for variance in ("beta", "beta_tilde"):
            b = elbo(variance, min(target, sde.N))
            by_nfe.append({"network": network,
                           "method": f"ddpm_ancestral ELBO, variance {variance}",
                           "nfe_target": target, "nfe": min(target, sde.N),
                           "bits_per_dim": float(b.mean()), "se": _se(b)})
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

def reference_quality_rows(np_rng, exp, clf, x_test, x_train, v_train, levels) -> list[dict]:
    """The reference rows of the quality table: the floor (as many training digits as samples
    against the test digits, mean +- sd over draws) and the independent-pixel model's samples."""
    ref = clf.features(x_test)
    floor, floor_sd = digits_metric.real_floor(np_rng, ref, clf.features(x_train),
                                               exp.num_samples)
    pixel = data.scale_images(digits_metric.PixelModel(v_train, levels).sample(
        np_rng, exp.num_samples), levels)
    fd, fd_sd = digits_metric.frechet_interval(np_rng, clf.features(pixel), ref)
    return [{"network": "-", "sampler": "training digits (floor)", "nfe_target": 0, "nfe": 0,
             "fd": floor, "fd_sd": floor_sd, "class_tv": digits_metric.class_histogram_tv(
                 clf.probs(x_train[:exp.num_samples]))},
            {"network": "-", "sampler": "independent pixels", "nfe_target": 0, "nfe": 0,
             "fd": fd, "fd_sd": fd_sd,
             "class_tv": digits_metric.class_histogram_tv(clf.probs(pixel))}]


def quality_rows(rng, np_rng, sde, score_fn, exp, clf, x_test, network: str):
    """FD to the test digits (with bootstrap sd) and class-histogram TV for every sampler and
    NFE target of a network; and the samples by (sampler, NFE)."""
    ref = clf.features(x_test)
    rows, shape = [], (exp.num_samples, *x_test.shape[1:])
    samples = {}
    bar = common.progress(desc=f"{network}: samplers", total=len(exp.methods) * len(exp.nfes))
    for method in exp.methods:
        sampler = sde_lib.SAMPLERS[method]
        for column, nfe_target in enumerate(exp.nfes):
            bar.update(1)
            if sampler.adaptive:  # tolerances, not steps: one per column, the NFE is measured
                options = {"rtol": 10.0 ** -(column + 2), "atol": 10.0 ** -(column + 2)}
                num_steps = 1
            else:
                options, num_steps = {}, sampler.num_steps_for(nfe_target)
            row = {"network": network, "sampler": method, "nfe_target": nfe_target}
            try:
                fn = jax.jit(lambda k, m=method, s=num_steps, o=options: sde_lib.sample(
                    k, sde, score_fn, shape, method=m, num_steps=s, **o))
                start = time.perf_counter()
                x, nfe = jax.block_until_ready(fn(rng))
            except ValueError:  # the method rejects this setting (reverse diffusion, beta >= 1)
                rows.append(row)
                continue
            x = np.asarray(x)
            row.update(nfe=int(nfe), seconds=time.perf_counter() - start)
            if np.all(np.isfinite(x)):
                fd, fd_sd = digits_metric.frechet_interval(np_rng, clf.features(x), ref)
                row.update(fd=fd, fd_sd=fd_sd,
                           class_tv=digits_metric.class_histogram_tv(clf.probs(x)))
            rows.append(row)
            samples[(method, nfe_target)] = x
    bar.close()
    return rows, samples


# ----- inverse problems --------------------------------------------------------------------------

def observation(task: str, shape) -> np.ndarray:
    """``A`` ``(m, 64)`` of a task on 8x8 images."""
    D = math.prod(shape)
    if task == "inpainting":  # the top half (rows 0-3) observed
        mask = np.zeros(shape, bool)
        mask[:4] = True
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


def inverse_rows(rng, sde, score_fn, exp, x_test, x_train):
    """Per task and method the mean squared error over the digits (of the missing half for
    inpainting, of the whole image otherwise) with its standard error; the restorations."""
    n = exp.num_inverse
    truth = x_test[:n]
    flat_train = x_train.reshape(len(x_train), -1)
    shape = truth.shape[1:]
    rows, shown = [], {}
    for t, (task, sigma_y) in enumerate(TASKS):
        if task not in exp.tasks:
            continue
        A = observation(task, shape[:2])
        key = jax.random.fold_in(rng, t)
        y = truth.reshape(n, -1) @ A.T
        if sigma_y:
            y = y + sigma_y * np.asarray(jax.random.normal(jax.random.fold_in(key, 1), y.shape))
        scored = (slice(None), slice(4, None)) if task == "inpainting" else (slice(None),)

        def err(x, truth=truth, scored=scored):
            d = (np.asarray(x).reshape(truth.shape) - truth)[scored]
            return (d**2).reshape(n, -1).mean(1)

        mean_image = np.broadcast_to(flat_train.mean(0), (n, flat_train.shape[1]))
        nearest = flat_train[np.argmin(((y[:, None] - (flat_train @ A.T)[None]) ** 2).sum(-1), 1)]
        candidates = [("mean training image", mean_image), ("nearest training digit", nearest)]
        if task != "inpainting":  # the observation itself (the pooled means upsampled)
            candidates.append(("observation", _observed_image(task, y, A, shape)))
        methods = ([("projection", "projection", {})] if not sigma_y else [])
        methods += [(f"dps-norm {z:g}", "dps", {"normalize": True, "scale": z})
                    for z in exp.zetas]
        methods += [("pigdm", "pigdm", {})]
        for name, guidance, options in common.progress(methods, f"inverse problems: {task}",
                                                       unit="method"):
            fn = jax.jit(lambda k, g=guidance, o=options, A=A, y=y, s=sigma_y:
                         sde_lib.conditional_sample(k, sde, score_fn, (n, *shape), A, y, s,
                                                    guidance=g, method="ddpm_ancestral",
                                                    num_steps=exp.inverse_steps, **o)[0])
            candidates.append((name, np.asarray(fn(key))))
        for name, x in candidates:
            finite = bool(np.all(np.isfinite(x)))
            e = err(x) if finite else None
            rows.append({"task": task, "sigma_y": sigma_y, "method": name,
                         "mse": None if e is None else float(e.mean()),
                         "mse_se": None if e is None else _se(e), "digits": n})
            shown[(task, name)] = np.asarray(x).reshape(truth.shape)[:8]
        shown[(task, "observed")] = _observed_image(task, y[:8], A, shape)
    return rows, shown


def _observed_image(task, y, A, shape):
    """What is observed, as an image: the known half (the rest -1), the pooled means upsampled,
    or the noisy image."""
    if task == "inpainting":
        x = np.full((len(y), math.prod(shape)), -1.0)
        x[:, np.argmax(A, 1)] = y
        return x.reshape(len(y), *shape)
    return (y @ (A / np.sum(A**2, 1, keepdims=True))).reshape(len(y), *shape)


# ----- the module --------------------------------------------------------------------------------

def _model_dir(workdir: str, exp: DigitsConfig, network: str) -> str:
    return os.path.join(workdir, "model" if network == exp.networks[0] else f"model_{network}")


def train_networks(config, workdir: str, exp: DigitsConfig) -> dict[str, dict]:
    """Trains (or reloads) every network of ``exp.networks`` with the config's loss, SDE and
    training; ``{network: trainer.train_and_evaluate's result}``."""
    trained = {}
    for network in exp.networks:
        network_config = config
        if network != exp.networks[0]:  # the model section replaced (its fields are the first's)
            network_config = ml_collections.ConfigDict(config.to_dict())
            network_config.model = ml_collections.ConfigDict({"name": network})
        trainer.validate_config(network_config)
        trained[network] = trainer.train_and_evaluate(network_config,
                                                      _model_dir(workdir, exp, network))
    return trained


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) the networks of ``config`` in ``workdir``, then measures them;
    returns the paths written."""
    exp = trainer.experiment_config(DigitsConfig, config)
    data_config = trainer.parse_config(config).data
    if data_config.name != data.DIGITS:
        raise ValueError(f"data.name must be {data.DIGITS!r} here, got {data_config.name!r}")
    if config.model.name != exp.networks[0]:
        raise ValueError(f"experiment.networks[0] must be the config's model.name "
                         f"{config.model.name!r}, got {exp.networks[0]!r}")
    trained = train_networks(config, workdir, exp)
    main = exp.networks[0]
    sde = trained[main]["sde"]
    v_test, levels = load_images(data_config, data_config.eval_split)
    v_train, _ = load_images(data_config, "train")
    x_test = data.scale_images(v_test, levels)
    x_train = data.scale_images(v_train, levels)
    clf = digits_metric.load_classifier(os.path.join(workdir, "classifier"))
    k_ll, k_sample, k_inverse = jax.random.split(jax.random.key(exp.seed + 1), 3)
    np_rng = np.random.default_rng(exp.seed)
    plt = reporting.pyplot()

    likelihood = baseline_rows(sde, v_test[:exp.num_test], v_train, levels)
    by_nfe, quality, samples = [], reference_quality_rows(np_rng, exp, clf, x_test, x_train,
                                                          v_train, levels), {}
    for network in exp.networks:
        score_fn = trained[network]["score_fn"]
        rows, nfe_rows = likelihood_rows(k_ll, sde, score_fn, v_test[:exp.num_test], levels,
                                         network, exp.nfes)
        likelihood += rows
        by_nfe += nfe_rows
        rows, drawn = quality_rows(k_sample, np_rng, sde, score_fn, exp, clf, x_test, network)
        quality += rows
        samples.update({(network, *key): x for key, x in drawn.items()})
    for row in likelihood + by_nfe:
        row["test_digits"] = exp.num_test
    paths = common.write_table(workdir, "digits", likelihood,
                               ["network", "model", "bits_per_dim", "se", "nfe",
                                   "test_digits"])
    paths.update(common.write_table(workdir, "likelihood_vs_nfe", by_nfe,
                                    ["network", "method", "nfe_target", "nfe",
                                        "bits_per_dim", "se", "test_digits"]))
    paths.update(reporting.save_figure(_likelihood_figure(plt, likelihood, by_nfe, exp),
                                       workdir, "likelihood_vs_nfe.png"))
    curves = {n: loss_curve(_model_dir(workdir, exp, n)) for n in exp.networks}
    if any(curves.values()):
        paths.update(common.write_table(
            workdir, "loss", [{"network": n, **r} for n, c in curves.items() for r in c],
            ["network", "step", "test_loss"]))
        paths.update(reporting.save_figure(_loss_figure(plt, curves), workdir, "loss.png"))

    accuracy = digits_metric.test_accuracy(clf)
    for row in quality:
        row["classifier_test_accuracy"] = accuracy
    paths.update(common.write_table(
        workdir, "quality", quality, ["network", "sampler", "nfe_target", "nfe", "fd", "fd_sd",
                                      "class_tv", "seconds", "classifier_test_accuracy"]))
    paths.update(reporting.save_figure(_quality_figure(plt, quality, exp), workdir,
                                       "quality_vs_nfe.png"))
    grid_rows, titles = [], []
    for network in exp.networks:
        for nfe_target in (min(exp.nfes), max(exp.nfes)):
            for method in exp.methods:
                x = samples.get((network, method, nfe_target))
                if x is not None and (network == main or method == exp.methods[0]):
                    grid_rows.append(x[:16])
                    titles.append(f"{network}: {method} @ {nfe_target}")
    paths.update(reporting.save_figure(_grid(grid_rows, titles, plt), workdir, "samples.png"))

    if not exp.tasks:  # no inverse problems asked for
        return paths
    inverse, shown = inverse_rows(k_inverse, sde, trained[main]["score_fn"], exp, x_test,
                                  x_train)
    for row in inverse:
        row["network"] = main
    paths.update(common.write_table(workdir, "inverse", inverse,
                                    ["network", "task", "sigma_y", "method", "mse", "mse_se",
                                        "digits"]))
    grid_rows, titles = [x_test[:8]], ["original"]
    for task in exp.tasks:
        for (t, name), x in shown.items():
            if t == task and name in ("observed", "nearest training digit", "projection",
                                      *(f"dps-norm {z:g}" for z in exp.zetas)):
                grid_rows.append(x)
                titles.append(f"{task}: {name}")
    paths.update(reporting.save_figure(_grid(grid_rows, titles, plt), workdir, "inverse.png"))
    return paths


def _loss_figure(plt, curves):
    """Held-out loss against the training step, one line per network."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for network, curve in curves.items():
        ax.plot([r["step"] for r in curve], [r["test_loss"] for r in curve], marker="o",
                ms=3, label=network)
    ax.set(xlabel="training step", ylabel="held-out loss (eps MSE per pixel)",
           yscale="log", title="digits, held-out loss (EMA parameters)")
    reporting.plain_log_ticks(ax)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def _likelihood_figure(plt, likelihood, by_nfe, exp):
    """Bits/dim against NFE per network: the fixed-step PF-ODE NLL and the strided ELBOs, with
    the adaptive PF-ODE NLL and the independent-pixel model as lines."""
    fig, axes = plt.subplots(1, len(exp.networks), figsize=(5.2 * len(exp.networks), 3.8),
                             squeeze=False, sharey=True)
    pixel = next(r for r in likelihood if r["model"].startswith("independent pixels"))
    for ax, network in zip(axes[0], exp.networks, strict=True):
        for method in dict.fromkeys(r["method"] for r in by_nfe):
            pts = [r for r in by_nfe if r["network"] == network and r["method"] == method]
            ax.errorbar([r["nfe"] for r in pts], [r["bits_per_dim"] for r in pts],
                        yerr=[r["se"] for r in pts], marker="o", ms=3, capsize=2, label=method)
        adaptive = next(r for r in likelihood
                        if r["network"] == network and r["model"] == "PF-ODE NLL")
        ax.axhline(adaptive["bits_per_dim"], color="k", lw=0.8,
                   label=f"PF-ODE NLL, adaptive ({adaptive['nfe']} NFE)")
        ax.axhline(pixel["bits_per_dim"], color="k", ls="--", lw=0.8,
                   label="independent pixels")
        ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)",
               ylabel="bits/dim of the test digits (+-1 SE)", title=network)
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
        ax.axhspan(floor["fd"] - floor["fd_sd"], floor["fd"] + floor["fd_sd"], color="k",
                   alpha=0.15, label="training digits (floor, +-1 sd)")
        ax.axhline(pixel["fd"], color="k", ls="--", lw=0.8, label="independent pixels")
        for color, method in zip(cycle, exp.methods, strict=True):
            pts = sorted((r["nfe"], r["fd"], r["fd_sd"]) for r in quality
                         if r["network"] == network and r["sampler"] == method
                         and r.get("fd") is not None)
            if pts:
                nfe, fd, sd = map(np.array, zip(*pts, strict=True))
                ax.errorbar(nfe, fd, yerr=sd, marker="o", ms=3, capsize=2, label=method,
                            color=color)
        ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)",
               ylabel="Frechet distance to test digits",
               title=f"{network}: classifier FD of {exp.num_samples} samples (+-1 bootstrap sd)")
        reporting.plain_log_ticks(ax)
    # one legend for the figure, below the panels, so that no panel's data are covered
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 6), 1, 1))
    return fig


def main(argv=None):
    cli.run_main(run, common.config_file("digits"), argv, settings=DigitsConfig)


if __name__ == "__main__":
    main()
