r"""The main job: reverse-SDE vs DDPM sampling (and every other sampler) on Gaussian-mixture data.

For each dimension ``d`` (default 2 and 16), the seeds' mixture of two identical Gaussians with
random shifts is the data. A score model is trained on it (``experiments/train.py``, the config
``experiments/configs/compare_samplers.py`` with ``data.dim = d``, in ``<workdir>/model_d<d>``;
a second run in the same workdir reuses it), then every
sampler runs at every NFE target both with the trained model and with the oracle's exact score,
so sampler error (exact rows) and model error (the difference) are separated. Each run is
measured against the exact mixture:

* ``sw2``: sliced 2-Wasserstein distance to as many exact samples (``sample_quality.py``); the
  ``exact samples`` row is its Monte Carlo floor, the mean over 8 pairs of independent exact sets
  (their sd is in ``summary.md``);
* ``nll``: mean true negative log-density of the samples, nats/dim (exact samples: the entropy);
* ``mode_err``: largest error of the mode weights (fraction per component minus its weight);
* ``wall_s``: wall time of the compiled sampler (compile time separately, ``compile_s``).

and once per score, the probability-flow NLL of held-out data in bits/dim (exact divergence).
Writes ``results.csv``, ``results.md``, ``summary.md`` (sliced W2 by sampler and NFE),
``likelihood.csv/md``, ``quality_vs_nfe.png`` and
``samples_2d.png`` into the workdir and prints the table and the paths.

Run: ``python -m experiments.compare_samplers --workdir runs/compare_samplers``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import sde_lib
from experiments import cli, reporting, sample_quality, train
from experiments.config_types import experiment_config
from experiments.configs import base

# adaptive solves take tolerances, not steps: one tolerance per NFE column, the NFE is measured
ADAPTIVE_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4)


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    """The ``experiment`` section of ``experiments/configs/compare_samplers.py``.

    Attributes:
      dims: data dimensions (one trained model each).
      methods: sampler names (``sde_lib.SAMPLERS``).
      nfes: NFE targets; a sampler takes ``Sampler.num_steps_for(nfe)`` steps.
      num_samples: samples per run (and exact samples to compare with).
      num_heldout: held-out points for the probability-flow NLL.
      seed: sampling and evaluation seed.
    """

    dims: tuple[int, ...]
    methods: tuple[str, ...]
    nfes: tuple[int, ...]
    num_samples: int
    num_heldout: int
    seed: int

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(sde_lib.SAMPLERS))
        if unknown:
            raise ValueError(f"methods {unknown} are not samplers; valid: "
                             f"{sorted(sde_lib.SAMPLERS)}")
        if not self.nfes or min(self.nfes) < 2:
            raise ValueError(f"nfes must be integers >= 2, got {self.nfes!r}")
        if len(self.nfes) > len(ADAPTIVE_TOLERANCES):
            raise ValueError(f"at most {len(ADAPTIVE_TOLERANCES)} NFE targets, got {self.nfes}")
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be integers >= 1, got {self.dims!r}")
        for name in ("num_samples", "num_heldout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def sampler_settings(method: str, nfe: int, column: int) -> tuple[int, dict]:
    """``(num_steps, options)`` that spend about ``nfe`` score evaluations."""
    sampler = sde_lib.SAMPLERS[method]
    if sampler.adaptive:
        tol = ADAPTIVE_TOLERANCES[column]
        return 1, {"rtol": tol, "atol": tol}
    return sampler.num_steps_for(nfe), {}


def run_sampler(rng, sde, score_fn, shape, method, num_steps, options):
    """Compile, then time one run. Returns ``(x, nfe, compile_s, wall_s)`` or ``None`` when the
    method rejects the setting (e.g. reverse diffusion with a beta_i >= 1)."""
    try:
        fn = jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, shape, method=method,
                                              num_steps=num_steps, **options))
        start = time.perf_counter()
        compiled = fn.lower(rng).compile()
    except ValueError:
        return None
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    x, nfe = jax.block_until_ready(compiled(rng))
    return np.asarray(x), int(nfe), compile_s, time.perf_counter() - start


def evaluate_runs(rng, sde, gmm, score_fns, config, progress, dim):
    """One row per (score, method, NFE target) for data ``gmm`` in dimension ``dim``."""
    n = config.num_samples
    rng_exact, rng_sw, rng_sample = jax.random.split(rng, 3)
    exact = np.asarray(gmm.sample(rng_exact, n))
    weights = np.asarray(gmm.weights)
    rows, samples = [], {}
    for score_name, score_fn in score_fns.items():
        for method in config.methods:
            for column, nfe_target in enumerate(config.nfes):
                num_steps, options = sampler_settings(method, nfe_target, column)
                out = run_sampler(rng_sample, sde, score_fn, (n, dim), method, num_steps, options)
                progress.update(1)
                row = {"dim": dim, "score": score_name, "sampler": method,
                       "nfe_target": nfe_target}
                if out is None:
                    rows.append(row)  # the method rejects this setting: n/a
                    continue
                x, nfe, compile_s, wall_s = out
                finite = bool(np.all(np.isfinite(x)))
                rows.append({**row, "nfe": nfe,
                             "sw2": sample_quality.sliced_wasserstein(x, exact, rng_sw)
                             if finite else math.inf,
                             "nll": sample_quality.mean_nll(gmm, x) if finite else math.inf,
                             "mode_err": float(np.max(np.abs(
                                 sample_quality.mode_weights(gmm, x) - weights)))
                             if finite else math.inf,
                             "compile_s": compile_s, "wall_s": wall_s})
                samples[(score_name, method, nfe_target)] = x
    # the Monte Carlo floor: SW2 between independent exact sets of the same size, 8 pairs
    floor = [sample_quality.sliced_wasserstein(
        np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 1), n)),
        np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 2), n)), rng_sw)
        for i in range(8)]
    reference = {"dim": dim, "score": "exact samples", "sampler": "-", "nfe_target": 0, "nfe": 0,
                 "sw2": float(np.mean(floor)), "sw2_sd": float(np.std(floor, ddof=1)),
                 "nll": sample_quality.mean_nll(gmm, exact), "mode_err": float(np.max(np.abs(
                     sample_quality.mode_weights(gmm, exact) - weights))),
                 "compile_s": 0.0, "wall_s": 0.0}
    return [reference] + rows, samples


def heldout_nll(rng, sde, gmm, score_fns, num, dim):
    """Probability-flow NLL of held-out data in bits/dim for each score, and the true NLL."""
    x = gmm.sample(jax.random.fold_in(rng, 7), num)
    out = {"true": float(-jnp.mean(gmm.log_prob(x)) / (dim * math.log(2)))}
    for name, score_fn in score_fns.items():
        logp, nfe = sde_lib.log_likelihood(rng, sde, score_fn, x, divergence="exact")
        out[name] = float(-jnp.mean(logp) / (dim * math.log(2)))
        out[f"{name}_nfe"] = int(nfe)
    return out


# ----- reporting ---------------------------------------------------------------------------------

COLUMNS = ("dim", "score", "sampler", "nfe_target", "nfe", "sw2", "nll", "mode_err",
           "compile_s", "wall_s")


def write_results(workdir, rows, likelihood):
    """``results.csv`` and ``results.md`` (one row per run) and ``likelihood.csv/md``."""
    paths = reporting.write_table(workdir, "results", rows, COLUMNS)
    scores = [k for k in likelihood[0] if k not in ("dim", "true") and not k.endswith("_nfe")]
    lk_rows = [{"dim": d["dim"], "true NLL (bits/dim)": d["true"],
                **{f"{k} PF-ODE NLL": d[k] for k in scores},
                **{f"{k} NFE": d[f"{k}_nfe"] for k in scores}} for d in likelihood]
    paths.update(reporting.write_table(workdir, "likelihood", lk_rows, list(lk_rows[0])))
    return paths


def write_summary(workdir, rows, config):
    """``summary.md``: sliced W2 per sampler (rows) and NFE target (columns), one table per
    dimension and score, with the exact-vs-exact mean and sd over 8 pairs as the floor."""
    parts = []
    for dim in config.dims:
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for score in ("model", "exact"):
            table = []
            for method in config.methods:
                cells = {r["nfe_target"]: r.get("sw2") for r in rows if r["dim"] == dim and
                         r["score"] == score and r["sampler"] == method}
                table.append({"sampler": method, **{str(n): cells.get(n) for n in config.nfes}})
            parts.append(f"### d = {dim}, {score} score: sliced W2 by NFE target (exact vs "
                         f"exact: {ref['sw2']:.3f} +- {ref['sw2_sd']:.3f})\n\n"
                         + reporting.markdown_table(table, ["sampler", *map(str, config.nfes)]))
    return {"summary.md": reporting.write_atomic(os.path.join(workdir, "summary.md"),
                                                 "\n".join(parts))}


def write_figures(workdir, rows, samples, gmm_2d, config):
    """``quality_vs_nfe.png`` (SW2 against NFE, one panel per dimension and score) and
    ``samples_2d.png`` (model samples at the middle NFE over the true density's contours)."""
    plt = reporting.pyplot()
    paths = {}
    scores = [s for s in dict.fromkeys(r["score"] for r in rows) if s != "exact samples"]
    fig, axes = plt.subplots(len(config.dims), len(scores), squeeze=False,
                             figsize=(5 * len(scores), 3.6 * len(config.dims)))
    for i, dim in enumerate(config.dims):
        floor = [r["sw2"] for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for j, score in enumerate(scores):
            ax = axes[i, j]
            for method in config.methods:
                pts = [(r["nfe"], r["sw2"]) for r in rows if r["dim"] == dim and
                       r["score"] == score and r["sampler"] == method and "nfe" in r
                       and math.isfinite(r["sw2"])]
                if pts:
                    ax.loglog(*zip(*sorted(pts), strict=True), marker="o", ms=3, label=method)
            ax.axhline(floor, color="k", ls=":", lw=1, label="exact vs exact")
            ax.set(title=f"d = {dim}, {score} score", xlabel="NFE", ylabel="sliced W2")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    paths.update(reporting.save_figure(fig, workdir, "quality_vs_nfe.png"))
    if gmm_2d is not None:
        nfe = config.nfes[len(config.nfes) // 2]
        score = scores[0]
        fig, axes = plt.subplots(2, math.ceil(len(config.methods) / 2), squeeze=False,
                                 figsize=(3.2 * math.ceil(len(config.methods) / 2), 6.4))
        lim = 1.2 * float(np.abs(np.asarray(gmm_2d.means)).max()) + 3.5
        g = np.linspace(-lim, lim, 120)
        xx, yy = np.meshgrid(g, g)
        dens = np.exp(np.asarray(gmm_2d.log_prob(jnp.asarray(np.stack([xx.ravel(), yy.ravel()],
                                                                          1)))).reshape(xx.shape))
        for ax, method in zip(axes.ravel(), config.methods, strict=False):
            ax.contour(xx, yy, dens, levels=6, colors="k", linewidths=0.6)
            x = samples.get((score, method, nfe))
            if x is not None:
                ax.scatter(x[:1000, 0], x[:1000, 1], s=1, alpha=0.4)
            ax.set(title=f"{method}", xlim=(-lim, lim), ylim=(-lim, lim))
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"d = 2, {score} score, NFE target {nfe}")
        fig.tight_layout()
        paths.update(reporting.save_figure(fig, workdir, "samples_2d.png"))
    return paths


# ----- the job ----------------------------------------------------------------------------------

def compare_samplers(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model per dimension, runs the comparison; returns the paths of
    the files written."""
    exp = experiment_config(ComparisonConfig, config)
    configs = {dim: base.override(config, {"data.dim": dim}) for dim in exp.dims}
    for c in configs.values():  # every dimension checked before anything trains
        train.validate_config(c)
    rng = jax.random.key(exp.seed)
    total = 2 * len(exp.dims) * len(exp.methods) * len(exp.nfes)
    rows, likelihood, samples_2d, gmm_2d = [], [], {}, None
    for dim, c in configs.items():
        trained = train.train_and_evaluate(c, os.path.join(workdir, f"model_d{dim}"))
        sde, gmm = trained["sde"], trained["dataset"].gmm
        score_fns = {"model": trained["score_fn"], "exact": gmm.score_fn(sde)}
        key_eval = jax.random.fold_in(rng, dim)
        with tqdm(total=total // len(exp.dims), desc=f"sampler runs d={dim}",
                  unit="run") as progress:
            dim_rows, samples = evaluate_runs(key_eval, sde, gmm, score_fns, exp, progress, dim)
        rows += dim_rows
        likelihood.append({"dim": dim, **heldout_nll(key_eval, sde, gmm, score_fns,
                                                     exp.num_heldout, dim)})
        if dim == 2:
            samples_2d, gmm_2d = samples, gmm
    paths = write_results(workdir, rows, likelihood)
    paths.update(write_summary(workdir, rows, exp))
    paths.update(write_figures(workdir, rows, samples_2d, gmm_2d, exp))
    return paths


run = compare_samplers


def main(argv=None):
    cli.run_main(compare_samplers, "compare_samplers", argv)


if __name__ == "__main__":
    main()
