r"""Linear inverse problems on mixture data against the exact posterior ``p(x_0 | y)``.

The three-component 2-D mixture is observed through ``y = x_1 + sigma_y z`` (``A = [1, 0]``) at
several values of ``y``; ``sde_lib.conditional_sample`` with each guidance (projection; DPS with
the likelihood's weight and with Chung et al.'s normalised step at several ``zeta'``; TMPD; PiGDM's
scalar covariance) and both the exact score and trained models (those of ``experiments.tweedie``,
one per training seed in ``<workdir>/model_s<seed>``) is compared with the exact posterior
``GaussianMixture.condition(A, y, sigma_y)``: error of the posterior mean of the unobserved
coordinate (``mean_err_x2``, with its Monte Carlo standard error ``mean_err_x2_se``), of its
standard deviation, of the mode weights (components assigned from x_2), and the 2-Wasserstein
distance of the x_2 samples to as many exact posterior samples (``w2_x2``; ``w2_floor`` between two
exact sets). Every value is the mean and sd over the runs: ``sample_seeds`` sampling seeds, times
the training seeds for the model; ``finite`` counts the runs whose samples are finite (the others
are left out; none finite: n/a). Inpainting of digits is in ``experiments/images.py``.

Writes ``inverse.csv/md`` and ``inverse.png`` (samples over the posterior density for one ``y``).
Run: ``python -m experiments.inverse_problems --workdir runs/inverse``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import trainer
from experiments import common
from trainer import cli, reporting

# (name in the tables, guidance, sigma_y, options of conditional_sample): DPS with the
# likelihood's own weight and with Chung et al.'s normalised step at three zeta', TMPD with its
# Tweedie covariance (kept positive semidefinite) and PiGDM's scalar one
GUIDANCES = (("projection", "projection", 0.0, {}),
             ("dps", "dps", 0.2, {}),
             *((f"dps-norm {zeta:g}", "dps", 0.2, {"normalize": True, "scale": zeta})
               for zeta in (0.01, 0.05, 0.2)),
             ("tmpd", "tmpd", 0.2, {}),
             ("tmpd", "tmpd", 0.0, {}),
             ("pigdm", "pigdm", 0.2, {}))


@dataclasses.dataclass(frozen=True)
class InverseConfig:
    """The ``experiment`` section: ys: observed values of x_1; num_samples, num_steps, method:
    the conditional sampler; train_seeds: the models (one per training seed); sample_seeds:
    sampling seeds per score; seed: of the sampling."""

    ys: tuple[float, ...]
    num_samples: int
    num_steps: int
    method: str
    train_seeds: tuple[int, ...]
    sample_seeds: int
    seed: int

    def __post_init__(self):
        if self.method not in sde_lib.SAMPLERS or sde_lib.SAMPLERS[self.method].adaptive:
            raise ValueError(f"experiment.method must be a fixed-step sampler, one of "
                             f"{[m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive]}, "
                             f"got {self.method!r}")
        if not self.ys or self.num_samples < 2 or self.num_steps < 1 or self.sample_seeds < 1:
            raise ValueError(f"need ys non-empty, num_samples >= 2 and num_steps, sample_seeds "
                             f">= 1, got {self.ys!r}, {self.num_samples}, {self.num_steps}, "
                             f"{self.sample_seeds}")
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must be integers >= 0, got {self.train_seeds!r}")


METRICS = ("mean_err_x2", "mean_err_x2_se", "sd_err_x2", "mode_err", "w2_x2")


def _metrics(x, post, marginal, exact, rng) -> dict | None:
    if not np.all(np.isfinite(x)):
        return None
    mean, cov = np.asarray(post.mean()), np.asarray(post.covariance())
    return {"mean_err_x2": float(x[:, 1].mean() - mean[1]),
            "mean_err_x2_se": float(x[:, 1].std(ddof=1) / math.sqrt(len(x))),
            "sd_err_x2": float(x[:, 1].std() - np.sqrt(cov[1, 1])),
            "mode_err": float(np.max(np.abs(common.mode_weights(marginal, x[:, 1:])
                                            - np.asarray(post.weights)))),
            "w2_x2": common.sliced_wasserstein(x[:, 1:], exact, rng)}


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model of ``config`` per training seed in ``workdir/model_s<seed>``,
    then samples every guidance with them and with the exact score; returns the paths written."""
    exp = trainer.experiment_config(InverseConfig, config)
    models = common.train_models(config, workdir, exp.train_seeds)
    sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
    key_sample, key_ref = jax.random.split(jax.random.key(exp.seed))
    scores = {"exact": [jax.tree_util.Partial(gmm.score_fn(sde))],
              "model": [m["score_fn"] for m in models]}
    A = jnp.array([[1.0, 0.0]])
    n = exp.num_samples
    rows, shown = [], {}
    bar = common.progress(desc="inverse problems: (y, guidance, score)",
                          total=len(exp.ys) * len(GUIDANCES) * len(scores))
    for y in exp.ys:
        for label, guidance, sigma_y, options in GUIDANCES:
            post = gmm.condition(A, jnp.array([y]), max(sigma_y, 1e-6))
            # the law of the unobserved x_2 (the x_1 part is degenerate when sigma_y = 0)
            marginal = sde_lib.GaussianMixture(np.asarray(post.weights),
                                               np.asarray(post.means)[:, 1:],
                                               np.asarray(post.covs)[:, 1:, 1:])
            exacts = [np.asarray(marginal.sample(jax.random.fold_in(key_ref, r), n))
                      for r in range(exp.sample_seeds + 1)]
            floor = common.sliced_wasserstein(exacts[-1], exacts[0], key_ref)
            sample = jax.jit(lambda k, obs, sf, g=guidance, s=sigma_y, o=options:
                             sde_lib.conditional_sample(k, sde, sf, (n, 2), A, obs, s, guidance=g,
                                                        method=exp.method,
                                                        num_steps=exp.num_steps, **o)[0])
            for score_name, score_fns in scores.items():
                runs, total = [], 0
                for score_fn in score_fns:
                    for r in range(exp.sample_seeds):
                        x = np.asarray(sample(jax.random.fold_in(key_sample, r),
                                              jnp.array([y]), score_fn))
                        total += 1
                        run_metrics = _metrics(x, post, marginal, exacts[r], key_ref)
                        if run_metrics is not None:
                            runs.append(run_metrics)
                        if (y == exp.ys[len(exp.ys) // 2] and score_name == "exact"
                                and r == 0):
                            shown[(label, sigma_y)] = (x, post)
                row = {"y": y, "sigma_y": sigma_y, "guidance": label, "score": score_name,
                       "exact_mean_x2": float(np.asarray(post.mean())[1]),
                       "finite": f"{len(runs)}/{total}", "w2_floor": floor}
                if runs:
                    row.update(common.summarize(runs, METRICS))
                    row.pop("mean_err_x2_se_sd", None)
                rows.append(row)
                bar.update(1)
    bar.close()
    columns = ["y", "sigma_y", "guidance", "score", "finite", "exact_mean_x2", "mean_err_x2",
               "mean_err_x2_sd", "mean_err_x2_se", "sd_err_x2", "sd_err_x2_sd", "mode_err",
               "mode_err_sd", "w2_x2", "w2_x2_sd", "w2_floor"]
    paths = common.write_table(workdir, "inverse", rows, columns)
    paths.update(reporting.save_figure(figure(shown, exp.ys[len(exp.ys) // 2]), workdir,
                                       "inverse.png"))
    return paths


def figure(shown: dict, y: float, cols: int = 4):
    """``inverse.png`` (a matplotlib ``Figure``): for each ``(guidance, sigma_y)`` of ``shown``
    (its samples ``x`` ``(n, 2)`` and the exact posterior ``post``), the histogram of the
    unobserved ``x_2`` over the exact density ``p(x_2 | y)``; panels wrap into rows of
    ``cols``, with one legend for the figure."""
    plt = reporting.pyplot()
    cols = min(cols, len(shown))
    rows = -(-len(shown) // cols)
    height = 2.9 * rows + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, height), squeeze=False)
    grid = np.linspace(-5, 4, 300)
    for ax, ((guidance, sigma_y), (x, post)) in zip(axes.ravel(), shown.items(), strict=False):
        w, mu, var = (np.asarray(post.weights), np.asarray(post.means)[:, 1],
                      np.asarray(post.covs)[:, 1, 1])
        dens = np.sum(w[:, None] * np.exp(-(grid - mu[:, None]) ** 2 / (2 * var[:, None]))
                      / np.sqrt(2 * np.pi * var[:, None]), axis=0)
        ax.hist(x[:, 1], bins=60, range=(-5, 4), density=True, alpha=0.5,
                label="samples (histogram)")
        ax.plot(grid, dens, "k", lw=1, label="exact p(x_2 | y)")
        ax.set(title=f"{guidance}, sigma_y = {sigma_y}", xlabel="unobserved coordinate x_2",
               ylabel="probability density")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(shown):]:
        fig.delaxes(ax)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"conditional samples of x_2 given y = x_1 = {y} (observation y = A x + "
                 f"sigma_y z), exact score")
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=2)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.45 / height))
    return fig


def main(argv=None):
    cli.run_main(run, common.config_file("inverse_problems"), argv, settings=InverseConfig)


if __name__ == "__main__":
    main()
