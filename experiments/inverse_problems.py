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
exact sets). Run ``u = i * sample_seeds + r`` (training seed ``i``, sampling seed ``r``) has its own
sampling key and exact set, the same for every guidance; the exact score runs in as many groups.
Every cell is the mean over the groups (``claims.spread``: its standard error from the spread
between the groups, floored at the sampling's share; the sd within a group beside it) over the
runs whose samples are finite (``finite`` counts them; none finite: n/a); the markdown table
prints ``mean +- h``, the 95% interval a re-run with as many other seeds lands in. Within each
``(y, sigma_y)`` and score every two guidances are compared on ``w2_x2`` and on the absolute
mean error ``abs_mean_err_x2``, and the model's score against the exact one for each guidance
(``claims.md/csv``, the rule of ``experiments.claims``); ``headline.md`` holds the statements
the README quotes. Inpainting of digits is in ``experiments/images.py``.

Writes ``inverse.csv/md``, the claims and ``inverse.png`` (samples over the posterior density for
one ``y``).
Run: ``python -m experiments.inverse_problems --workdir runs/inverse``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import trainer
from experiments import claims, common
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
        if len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"train_seeds must be distinct, got {self.train_seeds!r}")


METRICS = ("mean_err_x2", "abs_mean_err_x2", "sd_err_x2", "mode_err", "w2_x2")
LABELS = {"mean_err_x2": "mean error of x_2", "abs_mean_err_x2": "|mean error of x_2|",
          "sd_err_x2": "sd error of x_2", "mode_err": "mode-weight error",
          "w2_x2": "sliced W2 of x_2"}


def _metrics(x, post, marginal, exact, rng) -> dict | None:
    if not np.all(np.isfinite(x)):
        return None
    mean, cov = np.asarray(post.mean()), np.asarray(post.covariance())
    err = float(x[:, 1].mean() - mean[1])
    return {"mean_err_x2": err, "abs_mean_err_x2": abs(err),
            "mean_err_x2_mc_se": float(x[:, 1].std(ddof=1) / math.sqrt(len(x))),
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
            num_runs = len(exp.train_seeds) * exp.sample_seeds
            exacts = [np.asarray(marginal.sample(jax.random.fold_in(key_ref, u), n))
                      for u in range(num_runs + 1)]
            floor = common.sliced_wasserstein(exacts[-1], exacts[0], key_ref)
            sample = jax.jit(lambda k, obs, sf, g=guidance, s=sigma_y, o=options:
                             sde_lib.conditional_sample(k, sde, sf, (n, 2), A, obs, s, guidance=g,
                                                        method=exp.method,
                                                        num_steps=exp.num_steps, **o)[0])
            for score_name, score_fns in scores.items():
                runs = []
                for u in range(num_runs):
                    i = u // exp.sample_seeds
                    x = np.asarray(sample(jax.random.fold_in(key_sample, u), jnp.array([y]),
                                          score_fns[i % len(score_fns)]))
                    run_metrics = _metrics(x, post, marginal, exacts[u], key_ref)
                    if run_metrics is not None:
                        runs.append({**run_metrics, "group": i})
                    if y == exp.ys[len(exp.ys) // 2] and score_name == "exact" and u == 0:
                        shown[(label, sigma_y)] = (x, post)
                row = {"y": y, "sigma_y": sigma_y, "guidance": label, "score": score_name,
                       "exact_mean_x2": float(np.asarray(post.mean())[1]),
                       "finite": f"{len(runs)}/{num_runs}", "w2_floor": floor}
                if runs:
                    row.update(groups=len({r["group"] for r in runs}), runs=len(runs),
                               mean_err_x2_mc_se=float(np.mean([r["mean_err_x2_mc_se"]
                                                                for r in runs])))
                    for name in METRICS:
                        row.update(claims.spread(runs, name))
                rows.append(row)
                bar.update(1)
    bar.close()
    paths = write_tables(workdir, rows)
    paths.update(write_claims(workdir, rows))
    paths.update(reporting.save_figure(figure(shown, exp.ys[len(exp.ys) // 2]), workdir,
                                       "inverse.png"))
    return paths


COLUMNS = ["y", "sigma_y", "guidance", "score", "finite", "groups", "runs", "exact_mean_x2",
           *[c for m in METRICS for c in (m, f"{m}_se", f"{m}_sd", f"{m}_within_sd")],
           "mean_err_x2_mc_se", "w2_floor"]


def write_tables(workdir: str, rows: list[dict]) -> dict[str, str]:
    """``inverse.csv`` (every column) and ``inverse.md`` (each metric as ``mean +- h``, the 95%
    re-run half-width over the row's groups); returns the paths by name."""
    paths = common.write_table(workdir, "inverse", rows, COLUMNS)
    shown = [{**{c: r.get(c) for c in ("y", "sigma_y", "guidance", "score", "finite",
                                       "exact_mean_x2")},
              **{LABELS[m]: common.rerun_cell(r, m, r.get("groups") or 0) for m in METRICS},
              "W2 floor": r["w2_floor"]} for r in rows]
    paths["inverse.md"] = reporting.write_atomic(
        os.path.join(workdir, "inverse.md"), common.markdown_table(shown, list(shown[0])))
    return paths


def inverse_claims(rows: list[dict]) -> list[dict]:
    """Within each ``(y, sigma_y)`` and score, every two guidances on ``w2_x2`` and
    ``abs_mean_err_x2`` (context ``y = 0.5, sigma_y = 0.2, exact score``); for each guidance,
    the model's score against the exact one on ``w2_x2`` (context ``y = 0.5, sigma_y = 0.2,
    dps``). Each cell's standard error is over its groups (``experiments.claims``' rule)."""
    out = []
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["y"], r["sigma_y"], r["score"]), []).append(r)
    for (y, sigma_y, score), members in cells.items():
        where = f"y = {y:g}, sigma_y = {sigma_y:g}, {score} score"
        for name in ("w2_x2", "abs_mean_err_x2"):
            ok = [r for r in members if claims.comparable(r, name)]
            out += [claims.compare(where, LABELS[name], a["guidance"], a[name], a[f"{name}_se"],
                                   b["guidance"], b[name], b[f"{name}_se"])
                    for a, b in itertools.combinations(ok, 2)]
    for r in rows:
        if r["score"] != "model" or not claims.comparable(r, "w2_x2"):
            continue
        q = [e for e in rows if e["score"] == "exact" and (e["y"], e["sigma_y"], e["guidance"])
             == (r["y"], r["sigma_y"], r["guidance"]) and claims.comparable(e, "w2_x2")]
        if q:
            out.append(claims.compare(
                f"y = {r['y']:g}, sigma_y = {r['sigma_y']:g}, {r['guidance']}", LABELS["w2_x2"],
                "model score", r["w2_x2"], r["w2_x2_se"], "exact score", q[0]["w2_x2"],
                q[0]["w2_x2_se"]))
    return out


# results/README.md quotes ``headline`` of the committed claims between these lines
README_MARKERS = claims.readme_markers("inverse_problems",
                                       "experiments.inverse_problems.headline")


def headline(rows_of_claims) -> str:
    """The statements the README quotes, from the claims alone: for each ``(y, sigma_y)``,
    score and metric, the guidance with the lowest mean, those not resolved from it and how
    many are resolved above it."""
    pairwise = [c for c in rows_of_claims if c["a"] != "model score"]
    return "\n".join(claims.leaders(pairwise)) + "\n"


def write_claims(workdir: str, rows: list[dict]) -> dict[str, str]:
    """``claims.md``/``.csv`` (``inverse_claims``) and ``headline.md`` (``headline``)."""
    made = inverse_claims(rows)
    return claims.write_with_headline(workdir, made, headline(made))


def rewrite_reports(workdir: str) -> dict[str, str]:
    """``inverse.md`` and the claims of a finished run written again from its ``inverse.csv``
    by the current code (the figure needs the samples); returns their paths."""
    rows = common.read_table(os.path.join(workdir, "inverse.csv"))
    paths = write_tables(workdir, rows)
    paths.update(write_claims(workdir, rows))
    return paths


def rerun_check(committed: str, rerun: str) -> dict[str, tuple[int, int]]:
    """How many cells of ``committed``'s ``inverse.csv`` (a workdir or
    ``results/inverse_problems``) a re-run in ``rerun`` (other training and sampling seeds, the
    same settings) lands inside, per metric: ``{metric: (inside, cells)}``
    (``claims.rerun_coverage``; rows of one group have no interval and are not counted)."""
    return claims.rerun_check(committed, rerun, "inverse.csv",
                              ("y", "sigma_y", "guidance", "score"), METRICS)


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
