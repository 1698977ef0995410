r"""Tweedie denoising: posterior mean and covariance from a trained score against the exact oracle.

For ``x_t ~ p_t`` at several noise levels, ``E[x_0 | x_t] = (x_t + sigma_t^2 s(x_t)) / alpha_t``
and ``Cov[x_0 | x_t] = sigma_t^2 / alpha_t^2 (I + sigma_t^2 \nabla s)`` (Efron 2011; Meng et al.
2021; ``sde_lib.posterior_moments``) are computed from a score model trained on the data
(``experiments/configs/tweedie.py``, trained by ``experiments.train`` in ``<workdir>/model``) and
from the oracle's exact score, and compared with the exact posterior ``p(x_0 | x_t)`` of the
Gaussian mixture (``GaussianMixture.posterior``):

* ``mean_rmse``: root mean squared error of the posterior mean over the ``x_t`` samples;
* ``cov_err``: mean Frobenius norm of the covariance error;
* ``post_sd``: the exact posterior's typical spread ``sqrt(E tr Cov / d)``, the scale to compare
  the errors with; ``naive_mean_rmse``: the error of no denoising, ``x_t / alpha_t``.

Writes ``tweedie.csv/md`` and ``tweedie.png``. Run: ``python -m experiments.tweedie --workdir
runs/tweedie``.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

import sde_lib
from experiments import cli, reporting, train
from experiments.config_types import experiment_config


@dataclasses.dataclass(frozen=True)
class TweedieConfig:
    """The ``experiment`` section: times: the noise levels; num_points: x_t samples per level;
    seed: of the x_t samples."""

    times: tuple[float, ...]
    num_points: int
    seed: int


def _errors(score_fn, sde, x_t, t, exact_mean, exact_cov):
    mean, cov = sde_lib.posterior_moments(score_fn, sde, x_t, t)
    rmse = float(jnp.sqrt(jnp.mean(jnp.sum((mean - exact_mean) ** 2, -1))))
    cov_err = float(jnp.mean(jnp.linalg.norm(cov - exact_cov, axis=(-2, -1))))
    return rmse, cov_err


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) the model of ``config`` in ``workdir/model`` and compares its Tweedie
    moments with the exact posterior; returns the paths written."""
    exp = experiment_config(TweedieConfig, config)
    trained = train.train_and_evaluate(config, os.path.join(workdir, "model"))
    sde, gmm = trained["sde"], trained["dataset"].gmm
    key_x = jax.random.key(exp.seed)
    scores = {"model": trained["score_fn"], "exact": gmm.score_fn(sde)}
    rows = []
    for i, t in enumerate(exp.times):
        x_t = gmm.marginal(sde, t).sample(jax.random.fold_in(key_x, i), exp.num_points)
        tb = jnp.full((exp.num_points,), t)
        post = gmm.posterior(sde, x_t, tb)
        exact_mean, exact_cov = post.mean(), post.covariance()
        alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
        row = {"t": t, "sigma_t": float(sigma), "alpha_t": float(alpha),
               "post_sd": float(jnp.sqrt(jnp.mean(jnp.trace(exact_cov, axis1=1, axis2=2)) / 2))}
        for name, score_fn in scores.items():
            row[f"{name}_mean_rmse"], row[f"{name}_cov_err"] = _errors(
                score_fn, sde, x_t, tb, exact_mean, exact_cov)
        row["naive_mean_rmse"] = float(jnp.sqrt(jnp.mean(jnp.sum(
            (x_t / alpha - exact_mean) ** 2, -1))))
        rows.append(row)
    columns = ["t", "sigma_t", "alpha_t", "post_sd", "model_mean_rmse", "model_cov_err",
               "exact_mean_rmse", "exact_cov_err", "naive_mean_rmse"]
    paths = reporting.write_table(workdir, "tweedie", rows, columns)
    plt = reporting.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    s = [r["sigma_t"] for r in rows]
    ax.loglog(s, [r["model_mean_rmse"] for r in rows], "o-", label="mean, trained score")
    ax.loglog(s, [r["model_cov_err"] for r in rows], "s-", label="covariance, trained score")
    ax.loglog(s, [r["naive_mean_rmse"] for r in rows], "--", label="mean of x_t / alpha_t")
    ax.loglog(s, [r["post_sd"] for r in rows], "k:", label="exact posterior sd")
    ax.set(xlabel="sigma_t", ylabel="error", title="Tweedie moments vs the exact posterior")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.update(reporting.save_figure(fig, workdir, "tweedie.png"))
    return paths


def main(argv=None):
    cli.run_main(run, "tweedie", argv)


if __name__ == "__main__":
    main()
