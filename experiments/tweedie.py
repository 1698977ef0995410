r"""Tweedie denoising: posterior mean and covariance from a trained score against the exact oracle.

For ``x_t ~ p_t`` at several noise levels, ``E[x_0 | x_t] = (x_t + sigma_t^2 s(x_t)) / alpha_t``
and ``Cov[x_0 | x_t] = sigma_t^2 / alpha_t^2 (I + sigma_t^2 \nabla s)`` (Efron 2011; Meng et al.
2021; ``sde_lib.posterior_moments``) are computed from score models trained on the data
(``experiments/configs/tweedie.py`` with ``training.seed = s``, trained by ``trainer``
in ``<workdir>/model_s<s>``, one per training seed) and from the oracle's exact score, and
compared with the exact posterior ``p(x_0 | x_t)`` of the Gaussian mixture
(``GaussianMixture.posterior``):

* ``mean_rmse``: root mean squared error of the posterior mean over the ``x_t`` samples;
* ``cov_err``: mean Frobenius norm of the covariance error;
* ``post_sd``: the exact posterior's typical spread ``sqrt(E tr Cov / d)``, the scale to compare
  the errors with; ``naive_mean_rmse``: the error of no denoising, ``x_t / alpha_t``.

The model's errors are the mean over the training seeds with ``model_*_sd``, the sd between
the seeds (what training gives), ``model_*_mc_se``, the Monte Carlo standard error over the
``x_t`` samples (mean over the seeds; delta method for the root mean square), and
``model_*_se``, the cell's standard error ``sqrt(sd^2 / seeds + mc_se^2)``: every seed is
measured on the same ``x_t``, so their Monte Carlo error is shared and does not average out over
the seeds, while a re-run with another ``seed`` draws other ``x_t``. The markdown table prints
``mean +- h``, the 95% interval a re-run with as many other seeds lands in
(``claims.rerun_halfwidth``); the study states no comparison between models (no claims file).

Writes ``tweedie.csv/md`` and ``tweedie.png``. Run: ``python -m experiments.tweedie --workdir
runs/tweedie``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import trainer
from experiments import claims, common
from trainer import cli, reporting


@dataclasses.dataclass(frozen=True)
class TweedieConfig:
    """The ``experiment`` section: times: the noise levels; num_points: x_t samples per level;
    train_seeds: one model per training seed; seed: of the x_t samples."""

    times: tuple[float, ...]
    num_points: int
    train_seeds: tuple[int, ...]
    seed: int

    def __post_init__(self):
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must be integers >= 0, got {self.train_seeds!r}")
        if self.num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {self.num_points!r}")


def _errors(score_fn, sde, x_t, t, exact_mean, exact_cov):
    """``(mean_rmse, its se, cov_err, its se)`` over the ``x_t`` samples."""
    mean, cov = sde_lib.posterior_moments(score_fn, sde, x_t, t)
    sq = np.asarray(jnp.sum((mean - exact_mean) ** 2, -1), np.float64)
    fro = np.asarray(jnp.linalg.norm(cov - exact_cov, axis=(-2, -1)), np.float64)
    rmse = math.sqrt(sq.mean())
    rmse_se = sq.std(ddof=1) / math.sqrt(len(sq)) / (2 * rmse) if rmse > 0 else 0.0
    return rmse, rmse_se, float(fro.mean()), float(fro.std(ddof=1) / math.sqrt(len(fro)))


def model_cell(runs: list[dict], name: str) -> dict:
    """``model_<name>`` over the seeds' ``runs`` (each with ``name`` and its Monte Carlo
    ``<name>_se``): the mean, the sd between seeds, the mean Monte Carlo SE and the cell's
    standard error ``sqrt(sd^2 / seeds + mc_se^2)`` (module docstring)."""
    values = np.array([r[name] for r in runs], float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else None
    mc = float(np.mean([r[f"{name}_se"] for r in runs]))
    return {f"model_{name}": float(values.mean()), f"model_{name}_sd": sd,
            f"model_{name}_mc_se": mc,
            f"model_{name}_se": None if sd is None else math.sqrt(sd**2 / len(values) + mc**2)}


COLUMNS = ["t", "sigma_t", "alpha_t", "post_sd", "model_mean_rmse", "model_mean_rmse_se",
           "model_mean_rmse_sd", "model_mean_rmse_mc_se", "model_cov_err", "model_cov_err_se",
           "model_cov_err_sd", "model_cov_err_mc_se", "exact_mean_rmse", "exact_cov_err",
           "naive_mean_rmse"]


def write_tables(workdir: str, rows: list[dict], seeds: int) -> dict[str, str]:
    """``tweedie.csv`` (every column) and ``tweedie.md`` (the model's errors as ``mean +- h``,
    the 95% re-run half-width over ``seeds``); returns the paths by name."""
    paths = common.write_table(workdir, "tweedie", rows, COLUMNS)
    shown = [{**{c: r[c] for c in ("t", "sigma_t", "alpha_t", "post_sd")},
              "model mean RMSE": common.rerun_cell(r, "model_mean_rmse", seeds),
              "model cov error (Frobenius)": common.rerun_cell(r, "model_cov_err", seeds),
              **{c: r[c] for c in ("exact_mean_rmse", "exact_cov_err", "naive_mean_rmse")}}
             for r in rows]
    paths["tweedie.md"] = reporting.write_atomic(
        os.path.join(workdir, "tweedie.md"), common.markdown_table(shown, list(shown[0])))
    return paths


def rerun_check(committed: str, rerun: str, seeds: int) -> dict[str, tuple[int, int]]:
    """How many of the trained score's cells in ``committed``'s ``tweedie.csv`` (a workdir or
    ``results/tweedie``, a mean over ``seeds`` training seeds) a re-run in ``rerun`` (as many
    other training seeds and another sampling seed) lands inside, per metric:
    ``{metric: (inside, cells)}`` (``claims.rerun_coverage``)."""
    return claims.rerun_check(committed, rerun, "tweedie.csv", ("t",),
                              ("model_mean_rmse", "model_cov_err"), seeds)


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model of ``config`` per training seed in ``workdir/model_s<seed>``
    and compares their Tweedie moments with the exact posterior; returns the paths written."""
    exp = trainer.experiment_config(TweedieConfig, config)
    models = common.train_models(config, workdir, exp.train_seeds)
    sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
    key_x = jax.random.key(exp.seed)
    rows = []
    for i, t in enumerate(common.progress(exp.times, "tweedie: noise levels", unit="level")):
        x_t = gmm.marginal(sde, t).sample(jax.random.fold_in(key_x, i), exp.num_points)
        tb = jnp.full((exp.num_points,), t)
        post = gmm.posterior(sde, x_t, tb)
        exact_mean, exact_cov = post.mean(), post.covariance()
        alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
        row = {"t": t, "sigma_t": float(sigma), "alpha_t": float(alpha),
               "post_sd": float(jnp.sqrt(jnp.mean(jnp.trace(exact_cov, axis1=1, axis2=2)) / 2))}
        row["exact_mean_rmse"], _, row["exact_cov_err"], _ = _errors(
            gmm.score_fn(sde), sde, x_t, tb, exact_mean, exact_cov)
        runs = [dict(zip(("mean_rmse", "mean_rmse_se", "cov_err", "cov_err_se"),
                         _errors(m["score_fn"], sde, x_t, tb, exact_mean, exact_cov),
                         strict=True)) for m in models]
        for name in ("mean_rmse", "cov_err"):
            row.update(model_cell(runs, name))
        row["naive_mean_rmse"] = float(jnp.sqrt(jnp.mean(jnp.sum(
            (x_t / alpha - exact_mean) ** 2, -1))))
        rows.append(row)
    paths = write_tables(workdir, rows, len(models))
    paths.update(reporting.save_figure(figure(rows, len(models)), workdir, "tweedie.png"))
    return paths


def figure(rows: list[dict], num_models: int):
    """``tweedie.png`` (a matplotlib ``Figure``) against sigma_t: left, the RMSE of the Tweedie
    posterior mean (data units) of the trained score and of the naive ``x_t / alpha_t``, with
    the exact posterior sd for scale; right, the Frobenius error of the Tweedie covariance
    (data units squared). Bars: the 95% re-run interval over the ``num_models`` training
    seeds."""
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    s = [r["sigma_t"] for r in rows]
    seeds = f"trained score (95% re-run interval, {num_models} seeds)"

    def bars(name):
        return [claims.rerun_halfwidth(r.get(f"{name}_se"), num_models) or 0.0 for r in rows]

    axes[0].errorbar(s, [r["model_mean_rmse"] for r in rows],
                     yerr=bars("model_mean_rmse"), fmt="o-", capsize=3,
                     label=seeds)
    axes[0].plot(s, [r["naive_mean_rmse"] for r in rows], "--", label="naive x_t / alpha_t")
    axes[0].plot(s, [r["post_sd"] for r in rows], "k:", label="exact posterior sd (scale)")
    axes[0].set(xscale="log", yscale="log", xlabel="noise level sigma_t",
                ylabel="RMSE of E[x_0 | x_t] (data units)", title="posterior mean (Tweedie)")
    axes[1].errorbar(s, [r["model_cov_err"] for r in rows],
                     yerr=bars("model_cov_err"), fmt="s-", capsize=3,
                     color="C3", label=seeds)
    axes[1].set(xscale="log", yscale="log", xlabel="noise level sigma_t",
                ylabel="||Cov_model - Cov_exact||_F\n(data units squared)",
                title="posterior covariance (second-order Tweedie)")
    for ax in axes:
        reporting.plain_log_ticks(ax)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Tweedie moments vs the exact posterior")
    fig.tight_layout()
    return fig


def main(argv=None):
    cli.run_main(run, common.config_file("tweedie"), argv, settings=TweedieConfig)


if __name__ == "__main__":
    main()
