r"""Digits: the tiny U-Net on the embedded 8x8 handwritten digits (scikit-learn's, via tfds).

Trains ``unet_digits`` with DDPM's eps loss on the DDPM chain (``DiscreteVPSDE``) on the train
split (``experiments/configs/digits.py``, trained by ``experiments.train`` in ``<workdir>/model``;
a second run in the same workdir reuses it), then on the test split (each bits/dim with its
standard error over the test images):

* probability-flow bits/dim (``sde_lib.log_likelihood`` with Hutchinson probes, uniform
  dequantization of the 17 grey levels in bins centred on the training values,
  ``sde_lib.bits_per_dim`` with ``num_bins=17``);
* the DDPM negative ELBO in bits/dim (``sde_lib.ddpm_negative_elbo``, discretized decoder with 17
  bins) on the same chain;
* sample grids from every sampler (``samples.png``, one row per sampler) with their NFE and time;
* inpainting: the bottom half of test digits restored from the top half by projection and by DPS
  (``inpainting.png``: originals, observed halves, restorations), with the mean squared error of
  the restored half.

Writes ``digits.csv/md``, ``samplers.csv/md``, ``samples.png`` and ``inpainting.png``.
Run: ``python -m experiments.digits --workdir runs/digits``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from experiments import cli, data, reporting, train
from experiments.config_types import experiment_config, parse_config

# the samplers of the committed results (the fast samplers join when they are regenerated)
SAMPLERS = ("ddpm_ancestral", "euler_maruyama", "reverse_diffusion", "pf_ode_euler",
            "pf_ode_heun", "pf_ode_adaptive", "ddim", "pc")


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The ``experiment`` section: num_steps: sampler steps; num_samples: images per sampler;
    num_test: test images for the likelihoods and inpainting; seed: of the evaluation."""

    num_steps: int
    num_samples: int
    num_test: int
    seed: int

    def __post_init__(self):
        if self.num_steps <= 20:  # reverse diffusion and pc need a num_steps-step chain, beta < 1
            raise ValueError(f"num_steps must be > 20 (VP beta_max = 20), got {self.num_steps}")
        for name in ("num_samples", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def load_images(data_config: data.DataConfig, split: str) -> tuple[np.ndarray, int]:
    """All images of a digits split as integer levels ``(n, 8, 8, 1)`` and the number of levels."""
    ds = data.load_dataset(data_config, split)
    v = np.stack([r["x"] for r in ds.source.__getitems__(list(range(len(ds))))])
    return v.astype(np.int32), ds.num_levels


def _se(values: np.ndarray) -> float:
    """Standard error of the mean over the test images (nan for one image)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


def _grid(rows_of_images, titles, plt):
    rows, cols = len(rows_of_images), max(len(r) for r in rows_of_images)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(0.7 * cols + 1.6, 0.8 * rows))
    for i, (images, title) in enumerate(zip(rows_of_images, titles, strict=True)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(images):
                ax.imshow(np.clip(images[j, ..., 0], -1, 1), cmap="gray_r", vmin=-1, vmax=1)
        axes[i, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) the U-Net of ``config`` in ``workdir/model``, then measures it;
    returns the paths written."""
    exp = experiment_config(DigitsConfig, config)
    data_config = parse_config(config).data
    if data_config.name != data.DIGITS:
        raise ValueError(f"data.name must be {data.DIGITS!r} here, got {data_config.name!r}")
    trained = train.train_and_evaluate(config, os.path.join(workdir, "model"))
    sde, score_fn = trained["sde"], trained["score_fn"]
    v_test, levels = load_images(data_config, data_config.eval_split)
    v_test = v_test[:exp.num_test]
    rng = jax.random.key(exp.seed + 1)
    k_deq, k_ll, k_elbo, k_sample, k_inpaint = jax.random.split(rng, 5)
    D = math.prod(v_test.shape[1:])
    # bins of width 2 / (L - 1) centred on the training levels 2 v / (L - 1) - 1
    half = 1.0 / (levels - 1)
    data_range = (-1.0 - half, 1.0 + half)
    x_deq = sde_lib.uniform_dequantize(k_deq, v_test, data_range, num_bins=levels)
    logp, nfe_ll = sde_lib.log_likelihood(k_ll, sde, score_fn, x_deq, divergence="rademacher",
                                          rtol=1e-4, atol=1e-4)
    bpd = np.asarray(sde_lib.bits_per_dim(logp, D, data_range, num_bins=levels))
    x_test = jnp.asarray(data.scale_images(v_test, levels))
    elbo = sde_lib.ddpm_negative_elbo(k_elbo, sde, score_fn, x_test, num_bins=levels)
    summary = [{"train_steps": int(trained["state"].step),
                "test_loss": trained["eval"]["test_loss"],
                "pf_ode_bpd": float(bpd.mean()), "pf_ode_bpd_se": _se(bpd),
                "pf_ode_nfe": int(nfe_ll), "ddpm_elbo_bpd": float(jnp.mean(elbo.bpd)),
                "ddpm_elbo_bpd_se": _se(np.asarray(elbo.bpd)), "num_test": len(v_test)}]
    paths = reporting.write_table(workdir, "digits", summary, list(summary[0]))
    shape = (exp.num_samples, *v_test.shape[1:])
    plt = reporting.pyplot()
    sampler_rows, grids = [], []
    for method in SAMPLERS:
        options = {"rtol": 1e-3, "atol": 1e-3} if sde_lib.SAMPLERS[method].adaptive else {}
        fn = jax.jit(lambda k, m=method, o=options: sde_lib.sample(
            k, sde, score_fn, shape, method=m, num_steps=exp.num_steps, **o))
        start = time.perf_counter()
        x, nfe = jax.block_until_ready(fn(k_sample))
        sampler_rows.append({"sampler": method, "nfe": int(nfe),
                             "seconds": time.perf_counter() - start})
        grids.append(np.asarray(x))
    paths.update(reporting.write_table(workdir, "samplers", sampler_rows,
                                       ["sampler", "nfe", "seconds"]))
    paths.update(reporting.save_figure(_grid(grids, list(SAMPLERS), plt), workdir,
                                       "samples.png"))
    # inpainting: observe the top half (rows 0-3), restore the bottom half
    n = min(8, len(v_test))
    truth = np.asarray(x_test[:n])
    mask = np.zeros(v_test.shape[1:], bool)
    mask[:4] = True
    A = np.eye(D)[mask.ravel()]
    y = truth.reshape(n, D) @ A.T
    restored, inpaint_rows = [], []
    for guidance, sigma_y in (("projection", 0.0), ("dps", 0.1)):
        x, _ = jax.jit(lambda k, g=guidance, s=sigma_y: sde_lib.conditional_sample(
            k, sde, score_fn, (n, *v_test.shape[1:]), A, y, s, guidance=g,
            num_steps=exp.num_steps))(k_inpaint)
        x = np.asarray(x)
        restored.append(x)
        inpaint_rows.append({"guidance": guidance, "sigma_y": sigma_y,
                             "mse_missing_half": float(np.mean((x - truth)[:, 4:] ** 2))})
    paths.update(reporting.write_table(workdir, "inpainting", inpaint_rows,
                                       ["guidance", "sigma_y", "mse_missing_half"]))
    observed = np.where(mask[None], truth, -1.0)
    fig = _grid([truth, observed, *restored], ["original", "observed", "projection", "dps"], plt)
    paths.update(reporting.save_figure(fig, workdir, "inpainting.png"))
    return paths


def main(argv=None):
    cli.run_main(run, "digits", argv)


if __name__ == "__main__":
    main()
