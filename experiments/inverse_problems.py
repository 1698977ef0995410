r"""Linear inverse problems on mixture data against the exact posterior ``p(x_0 | y)``.

The three-component 2-D mixture is observed through ``y = x_1 + sigma_y z`` (``A = [1, 0]``) at
several values of ``y``; ``sde_lib.conditional_sample`` with each guidance (projection, DPS,
TMPD) and both the exact score and a trained model is compared with the exact posterior
``GaussianMixture.condition(A, y, sigma_y)``: error of the posterior mean of the unobserved
coordinate, of its standard deviation, of the mode weights (components assigned from x_2), and
the 2-Wasserstein distance of the x_2 samples to exact posterior samples (``w2_x2``). A run whose
samples are not finite is reported as n/a. Inpainting of digits is in ``experiments/digits.py``.

Writes ``inverse.csv/md`` and ``inverse.png`` (samples over the posterior density for one ``y``).
Run: ``python -m experiments.inverse_problems --workdir runs/inverse``.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from experiments import cli, reporting, sample_quality, train
from experiments.config_types import experiment_config

GUIDANCES = (("projection", 0.0), ("dps", 0.2), ("tmpd", 0.2), ("tmpd", 0.0))


@dataclasses.dataclass(frozen=True)
class InverseConfig:
    """The ``experiment`` section: ys: observed values of x_1; num_samples, num_steps, method:
    the conditional sampler; seed: of the sampling."""

    ys: tuple[float, ...]
    num_samples: int
    num_steps: int
    method: str
    seed: int

    def __post_init__(self):
        if self.method not in sde_lib.SAMPLERS or sde_lib.SAMPLERS[self.method].adaptive:
            raise ValueError(f"experiment.method must be a fixed-step sampler, one of "
                             f"{[m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive]}, "
                             f"got {self.method!r}")
        if not self.ys or self.num_samples < 1 or self.num_steps < 1:
            raise ValueError(f"need ys non-empty and num_samples, num_steps >= 1, got "
                             f"{self.ys!r}, {self.num_samples}, {self.num_steps}")


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) the model of ``config`` in ``workdir/model``, then samples every
    guidance with it and with the exact score; returns the paths written."""
    exp = experiment_config(InverseConfig, config)
    trained = train.train_and_evaluate(config, os.path.join(workdir, "model"))
    sde, gmm = trained["sde"], trained["dataset"].gmm
    key_sample, key_ref = jax.random.split(jax.random.key(exp.seed))
    scores = {"exact": gmm.score_fn(sde), "model": trained["score_fn"]}
    A = jnp.array([[1.0, 0.0]])
    n = exp.num_samples
    rows, shown = [], {}
    for y in exp.ys:
        for guidance, sigma_y in GUIDANCES:
            post = gmm.condition(A, jnp.array([y]), max(sigma_y, 1e-6))
            # the law of the unobserved x_2 (the x_1 part is degenerate when sigma_y = 0)
            marginal = sde_lib.GaussianMixture(np.asarray(post.weights),
                                               np.asarray(post.means)[:, 1:],
                                               np.asarray(post.covs)[:, 1:, 1:])
            exact = np.asarray(marginal.sample(key_ref, n))
            for score_name, score_fn in scores.items():
                x, _ = jax.jit(lambda k, obs, sf=score_fn, g=guidance, s=sigma_y:
                               sde_lib.conditional_sample(
                                   k, sde, sf, (n, 2), A, obs, s, guidance=g,
                                   method=exp.method, num_steps=exp.num_steps)
                               )(key_sample, jnp.array([y]))
                x = np.asarray(x)
                finite = bool(np.all(np.isfinite(x)))
                mean, cov = np.asarray(post.mean()), np.asarray(post.covariance())
                rows.append({
                    "y": y, "sigma_y": sigma_y, "guidance": guidance, "score": score_name,
                    "exact_mean_x2": float(mean[1]),
                    "mean_err_x2": float(x[:, 1].mean() - mean[1]) if finite else None,
                    "sd_err_x2": float(x[:, 1].std() - np.sqrt(cov[1, 1])) if finite else None,
                    "mode_err": float(np.max(np.abs(sample_quality.mode_weights(marginal,
                                                                                x[:, 1:])
                                                    - np.asarray(post.weights))))
                    if finite else None,
                    "w2_x2": sample_quality.sliced_wasserstein(x[:, 1:], exact, key_ref)
                    if finite else None})
                if y == exp.ys[len(exp.ys) // 2] and score_name == "exact":
                    shown[(guidance, sigma_y)] = (x, post)
    columns = ["y", "sigma_y", "guidance", "score", "exact_mean_x2", "mean_err_x2", "sd_err_x2",
               "mode_err", "w2_x2"]
    paths = reporting.write_table(workdir, "inverse", rows, columns)
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, ((guidance, sigma_y), (x, post)) in zip(axes[0], shown.items(), strict=True):
        grid = np.linspace(-5, 4, 300)
        w, mu, var = (np.asarray(post.weights), np.asarray(post.means)[:, 1],
                      np.asarray(post.covs)[:, 1, 1])
        dens = np.sum(w[:, None] * np.exp(-(grid - mu[:, None]) ** 2 / (2 * var[:, None]))
                      / np.sqrt(2 * np.pi * var[:, None]), axis=0)
        ax.hist(x[:, 1], bins=60, range=(-5, 4), density=True, alpha=0.5, label="samples")
        ax.plot(grid, dens, "k", lw=1, label="exact p(x_2 | y)")
        ax.set(title=f"{guidance}, sigma_y={sigma_y}", xlabel="x_2")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"exact score, y = {exp.ys[len(exp.ys) // 2]}")
    fig.tight_layout()
    paths.update(reporting.save_figure(fig, workdir, "inverse.png"))
    return paths


def main(argv=None):
    cli.run_main(run, "inverse_problems", argv)


if __name__ == "__main__":
    main()
