r"""Loss parameterizations: the same network trained with each loss for the same number of steps.

The residual MLP is trained on the seeds' Gaussian pair (``d = 2`` by default) under the VP SDE
with each entry of ``LOSSES`` (``experiments/configs/compare_losses.py``: a name and the loss
fields it sets; each model trained by ``trainer`` in ``<workdir>/model_<i>_s<seed>``): eps /
x0 / v / score prediction, DSM with sigma^2, g^2 (likelihood) and no weighting, the DDPM simple and
ELBO-weighted losses, sliced score matching and Hutchinson explicit score matching. Each trained
score is evaluated on held-out data and against the exact mixture:

* ``heldout_dsm``: the sigma^2-weighted DSM loss of the implied score (a common yardstick, the
  same noise for every loss), with the exact score's value in the ``exact score`` row;
* ``nll_bpd``: probability-flow NLL of held-out data in bits/dim (exact divergence);
* ``elbo_bpd``: the DDPM negative ELBO of the same points in bits/dim (the VP SDE's 1000-step
  chain, Gaussian decoder, ``sde_lib.ddpm_negative_elbo``), an upper bound on the model's NLL;
* ``sw2_em``, ``sw2_heun``: sliced W2 of Euler-Maruyama (200 steps) and Heun (50 steps)
  samples to exact samples;
* ``config``: the ``--config experiments/configs/compare_losses.py:<fields>`` argument with which
  ``python -m trainer.main`` trains the same model.

Each model is evaluated ``sample_seeds`` times (run ``u = i * sample_seeds + r`` for training
seed ``i``: its own DSM noise, ELBO noise, sampler noise and exact samples; the exact score runs
as many groups of as many runs, on the same keys). Every cell is the mean over the training
seeds (``claims.spread``: its standard error from the spread between the seeds' means, floored
at the sampling's share, and the sd within a seed beside it; the NLL's and ELBO's add the
held-out points' own standard error, ``HELDOUT``: every run scores the same points, so their
draw is not in the spread between seeds); the markdown table prints
``mean +- h``, the 95% interval a re-run with as many other seeds lands in
(``claims.rerun_halfwidth``). Every pair of losses is compared on each metric by the rule of
``experiments.claims`` (``claims.md/csv``), and the statements the README quotes are generated
from them (``headline.md``, ``headline``). Every loss is trained on the same training seeds
and measured with the same sampling noise, so two losses are compared by their paired
differences (``claims.paired``), from the per-run values in ``runs.csv``. Writes
``losses.csv/md``, ``runs.csv``, the claims and ``losses.png``. Run: ``python -m
experiments.compare_losses --workdir runs/compare_losses``.
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
from experiments.configs import base
from experiments.configs.compare_losses import LOSSES
from trainer import cli, reporting


@dataclasses.dataclass(frozen=True)
class LossComparisonConfig:
    """The ``experiment`` section: losses: keys of ``LOSSES``; num_heldout, num_nll,
    num_samples: the evaluation; train_seeds: one model per loss and seed; sample_seeds:
    evaluations per model; seed: of the evaluation."""

    losses: tuple[str, ...]
    num_heldout: int
    num_nll: int
    num_samples: int
    train_seeds: tuple[int, ...]
    sample_seeds: int
    seed: int

    def __post_init__(self):
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"losses {unknown} are unknown; valid: {sorted(LOSSES)}")
        if not self.losses or len(set(self.losses)) != len(self.losses):
            raise ValueError(f"losses must be distinct keys of LOSSES, got {self.losses!r}")
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must be integers >= 0, got {self.train_seeds!r}")
        if len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"train_seeds must be distinct, got {self.train_seeds!r}")
        for name in ("num_heldout", "num_nll", "num_samples", "sample_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def loss_fields(name: str) -> dict:
    """The dotted config fields of loss ``name`` (every loss field not given is the base's)."""
    default = base.get_base_config().loss
    fields = {"weighting": default.weighting, "divergence": default.divergence,
              "time_sampling": default.time_sampling, **LOSSES[name]}
    return {f"loss.{k}": v for k, v in fields.items()}


METRICS = ("nll_bpd", "elbo_bpd", "heldout_dsm", "sw2_em", "sw2_heun")
LABELS = {"nll_bpd": "PF-ODE NLL (bits/dim)", "elbo_bpd": "DDPM ELBO (bits/dim)",
          "heldout_dsm": "held-out DSM loss (sigma^2)", "sw2_em": "sliced W2, Euler-Maruyama 200",
          "sw2_heun": "sliced W2, Heun 50"}


class Evaluator:
    """The evaluation, compiled once for every score (``score_fn`` is a pytree argument)."""

    def __init__(self, rng, sde, gmm, exp, heldout):
        self.gmm, self.exp = gmm, exp
        self.key_dsm, key_nll, self.key_s = jax.random.split(rng, 3)
        self.key_elbo = jax.random.fold_in(key_nll, 1)
        dsm = sde_lib.get_loss_fn(sde, sde_lib.LossConfig(name="dsm", weighting="sigma2",
                                                          parameterization="score"))
        x = heldout[:exp.num_nll]
        self.dsm = jax.jit(lambda key, sf: jnp.mean(dsm(key, sf, heldout)))
        # (log_likelihood and ddpm_negative_elbo compile once for every score themselves)
        # per point (bits/dim): the runs keep the mean and its standard error over the points
        self.nll = lambda sf: -sde_lib.log_likelihood(
            key_nll, sde, sf, x, divergence="exact")[0] / (gmm.dim * math.log(2))
        self.elbo = lambda key, sf: sde_lib.ddpm_negative_elbo(
            key, sde, sf, x, decoder="gaussian").bpd
        shape = (exp.num_samples, gmm.dim)
        self.samplers = {
            name: jax.jit(lambda key, sf, m=method, n=steps: sde_lib.sample(
                key, sde, sf, shape, method=m, num_steps=n)[0])
            for name, method, steps in (("sw2_em", "euler_maruyama", 200),
                                        ("sw2_heun", "pf_ode_heun", 50))}

    def __call__(self, score_fn, run: int = 0, nll=None) -> tuple[dict[str, float], dict]:
        """Run ``run``'s measures of ``score_fn`` and the per-point values of the held-out
        points' measures (``HELDOUT``): its DSM, ELBO and sampler noise and its set of exact
        samples are its own; the PF-ODE NLL (exact divergence) has no noise, so its per-point
        values already computed for this score can be passed as ``nll``."""
        key = jax.random.fold_in(self.key_s, run)
        exact = np.asarray(self.gmm.sample(jax.random.fold_in(key, 1), self.exp.num_samples))
        points = {"nll_bpd": np.asarray(self.nll(score_fn) if nll is None else nll, np.float64),
                  "elbo_bpd": np.asarray(self.elbo(jax.random.fold_in(self.key_elbo, run),
                                                   score_fn), np.float64)}
        out = {"heldout_dsm": float(self.dsm(jax.random.fold_in(self.key_dsm, run), score_fn)),
               **{name: float(v.mean()) for name, v in points.items()}}
        for name, draw in self.samplers.items():
            x = np.asarray(draw(key, score_fn))
            out[name] = (common.sliced_wasserstein(x, exact, key)
                         if np.all(np.isfinite(x)) else math.inf)
        return out, points

    def runs(self, score_fn, group: int, nll=None) -> list[dict]:
        """Group ``group``'s ``sample_seeds`` runs of ``score_fn`` (``u = group * m + r``), its
        NLL computed once (or its per-point values given as ``nll``), each run with the
        group's ``points_se`` of the held-out points' measures."""
        m, out, values = self.exp.sample_seeds, [], []
        for r in range(m):
            row, points = self(score_fn, group * m + r, nll)
            out.append({**row, "group": group, "run": group * m + r})
            values.append(points)
            nll = points["nll_bpd"]
        for name, column in HELDOUT.items():
            se = points_se([v[name] for v in values])
            for row in out:
                row[column] = se
        return out


def points_se(runs) -> float:
    """The standard error, over ``n`` held-out points, of a mean over them from the per-point
    values of runs on the same points with independent noise: ``sqrt(c / n)``, ``c`` the
    points' own variance, the mean covariance between two runs' per-point values over the
    points (the noise, independent between runs, drops out of it; with one run, or the same
    values in every run, their variance)."""
    v = np.asarray(runs, np.float64)
    if len(v) == 1:
        return float(v[0].std(ddof=1) / math.sqrt(v.shape[1]))
    c = np.mean([np.cov(v[a], v[b])[0, 1] for a, b in itertools.combinations(range(len(v)), 2)])
    return float(math.sqrt(max(c, 0.0) / v.shape[1]))


# the measures of the study's one set of held-out points, which every run scores: their draw is
# an error every cell shares and the spread between seeds does not hold (a re-run with another
# seed draws other points), so each of these cells' standard errors adds the rms over its runs
# of the points' standard error (column ``<name>_points_se``)
HELDOUT = {"nll_bpd": "nll_points_se", "elbo_bpd": "elbo_points_se"}


def summarize(runs: list[dict]) -> dict:
    """Each metric's ``claims.spread`` over ``runs``, with the counts of groups and runs; the
    held-out points' measures (``HELDOUT``) with their points' standard error added to the
    cell's: ``sqrt(se^2 + points_se^2)``, ``points_se`` in ``<name>_points_se``."""
    out = {"groups": len({r["group"] for r in runs}), "runs": len(runs)}
    for name in METRICS:
        out.update(claims.spread(runs, name))
        points = HELDOUT.get(name)
        if points is not None and out[f"{name}_se"] is not None:
            h = math.sqrt(np.mean([r[points] ** 2 for r in runs]))
            out[points] = h
            out[f"{name}_se"] = math.sqrt(out[f"{name}_se"] ** 2 + h**2)
    return out


COLUMNS = ["loss", "groups", "runs",
           *[c for m in METRICS for c in (m, f"{m}_se", f"{m}_sd", f"{m}_within_sd")],
           *HELDOUT.values(), "config"]


def write_tables(workdir: str, rows: list[dict]) -> dict[str, str]:
    """``losses.csv`` (every column) and ``losses.md`` (``mean +- h`` per metric, ``h`` the 95%
    re-run half-width over the row's groups); returns the paths by name."""
    paths = common.write_table(workdir, "losses", rows, COLUMNS)
    shown = [{"loss": r["loss"], "groups": r["groups"],
              **{LABELS[m]: common.rerun_cell(r, m, r["groups"]) for m in METRICS},
              "config": r.get("config") or "n/a"} for r in rows]
    md = common.markdown_table(shown, ["loss", "groups", *LABELS.values(), "config"])
    paths["losses.md"] = reporting.write_atomic(os.path.join(workdir, "losses.md"), md)
    return paths


def loss_claims(rows: list[dict], runs: list[dict] | None = None) -> list[dict]:
    """Every pair of losses (not the exact score) compared on each metric by
    ``experiments.claims``' rule; context-free, the metric named by its label. With the
    per-run values ``runs`` (``runs.csv``: every loss measured on the same training seeds and
    sampling noise), by their paired differences (``claims.paired``); else from each cell's
    standard error over its training seeds."""
    out = []
    trained = [r for r in rows if r["loss"] != "exact score"]
    for name in METRICS:
        ok = [r for r in trained if claims.comparable(r, name)]
        for a, b in itertools.combinations(ok, 2):
            if runs is None:
                out.append(claims.compare("", LABELS[name], a["loss"], a[name],
                                          a[f"{name}_se"], b["loss"], b[name], b[f"{name}_se"]))
                continue
            made = claims.paired("", LABELS[name], a["loss"],
                                 [r for r in runs if r["loss"] == a["loss"]], b["loss"],
                                 [r for r in runs if r["loss"] == b["loss"]], name)
            if made is not None:
                out.append(made)
    return out


# results/README.md quotes ``headline`` of the committed claims between these lines
README_MARKERS = claims.readme_markers("compare_losses", "experiments.compare_losses.headline")


def headline(rows_of_claims) -> str:
    """The statements the README quotes, from the claims alone: for each metric, the loss with
    the lowest mean, those not resolved from it and how many are resolved above it."""
    return "\n".join(claims.leaders(rows_of_claims)) + "\n"


def write_claims(workdir: str, rows: list[dict], runs: list[dict] | None = None
                 ) -> dict[str, str]:
    """``claims.md``/``.csv`` (``loss_claims``, paired where ``runs`` are given) and
    ``headline.md`` (``headline``)."""
    made = loss_claims(rows, runs)
    rule = claims.RULE if runs is None else f"{claims.RULE} {claims.PAIRED_RULE}"
    return claims.write_with_headline(workdir, made, headline(made), rule=rule)


def write_figure(workdir: str, rows: list[dict], num_seeds: int,
                 cap: float = 4.0) -> dict[str, str]:
    """Writes ``losses.png`` (``figure``) into ``workdir``; returns its path by name."""
    return reporting.save_figure(figure(rows, num_seeds, cap), workdir, "losses.png")


def _finite_range(lows, highs, default: tuple[float, float]) -> tuple[float, float]:
    """The smallest of ``lows`` and the largest of ``highs`` that are finite, else ``default``."""
    lows, highs = np.concatenate(lows), np.concatenate(highs)
    lows, highs = lows[np.isfinite(lows)], highs[np.isfinite(highs)]
    return (float(lows.min()) if lows.size else default[0],
            float(highs.max()) if highs.size else default[1])


def _halfwidths(rows: list[dict], name: str) -> np.ndarray:
    """Each row's 95% re-run half-width of ``name`` over its groups (0 where it has none)."""
    out = [claims.rerun_halfwidth(r.get(f"{name}_se"), int(r.get("groups") or 0)) for r in rows]
    return np.array([0.0 if h is None or not math.isfinite(h) else h for h in out], float)


def figure(rows: list[dict], num_seeds: int, cap: float = 4.0):
    """``losses.png`` (a matplotlib ``Figure``): per loss, the held-out PF-ODE NLL and DDPM
    ELBO (bits/dim, axis cut at ``cap``: a row beyond it is marked with its value) and the
    sliced W2 of two samplers, mean +- the 95% re-run half-width over the training seeds; the
    limits include every bar."""
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(rows) + 2.0), sharey=True)
    labels = [r["loss"] for r in rows]
    y = np.arange(len(rows))
    ends = []
    for name in ("nll_bpd", "elbo_bpd"):
        values = np.array([r[name] for r in rows], float)
        sds = np.where(values < cap, _halfwidths(rows, name), 0.0)
        ends += [values - sds, np.minimum(values, cap) + sds]
    low, high = _finite_range(ends[::2], ends[1::2], (cap - 1.0, cap))
    left = max(np.floor(10 * low) / 10 - 0.1, 0.0)
    right = max(high, cap) + 0.08 * (max(high, cap) - left)
    for name, dy, label in (("nll_bpd", -0.2, "PF-ODE NLL"), ("elbo_bpd", 0.2, "DDPM ELBO")):
        values = np.array([r[name] for r in rows], float)
        sds = _halfwidths(rows, name)
        shown = np.minimum(values, cap)
        axes[0].barh(y + dy, shown - left, 0.4, left=left, label=label,
                     xerr=np.where(values < cap, sds, 0.0), capsize=2)
        for k in np.flatnonzero(values >= cap):
            axes[0].text(cap, y[k] + dy, f" {values[k]:.3g}", va="center", fontsize=7)
    axes[0].set(yticks=y, yticklabels=labels, xlim=(left, right), ylabel="training loss",
                xlabel=f"held-out bits/dim\n(mean, 95% re-run interval over {num_seeds} "
                       f"training seeds)",
                title="likelihood (lower is better)")
    axes[0].legend(loc="best", fontsize=8)
    spans = []
    for name, dy, label in (("sw2_em", -0.2, "Euler-Maruyama 200"), ("sw2_heun", 0.2,
                                                                     "Heun 50 steps")):
        values = np.array([min(r[name], 10) for r in rows], float)
        sds = _halfwidths(rows, name)
        axes[1].barh(y + dy, values, 0.4, xerr=sds, label=label, capsize=2)
        spans += [np.where(values - sds > 0, values - sds, values / 3), values + sds]
    low, high = _finite_range(spans[::2], spans[1::2], (0.01, 10.0))
    low = low if low > 0 else 0.01
    axes[1].set(xscale="log", xlim=(low / 1.5, high * 1.5),
                xlabel=f"sliced W2 to exact samples (data units)\n(mean, 95% re-run interval "
                       f"over {num_seeds} seeds)", title="sample quality (lower is better)")
    axes[1].tick_params(labelleft=False)
    axes[1].set_ylabel("training loss (as left)")
    reporting.plain_log_ticks(axes[1], "x")
    axes[1].legend(loc="best", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="x", which="both")
    axes[0].invert_yaxis()
    fig.suptitle("training losses compared: held-out likelihood and sample quality")
    fig.tight_layout()
    return fig


# left out of the fingerprint of the kept evaluations: they choose which models are made
_CHOOSERS = ("losses", "train_seeds")


# a kept evaluation's name: ``runs2`` since the runs keep the held-out points' standard errors
# (the ``runs`` units before lack them and are not read)
_UNIT = "runs2"


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model per loss of ``config.experiment.losses`` and training seed
    and evaluates each; returns the paths written. Each model's evaluation (and each group of
    the exact score's) is kept in ``<workdir>/partial`` (``common.ResultCache``: the config
    without ``_CHOOSERS``, the loss, the seed and ``num_train_steps``), so a stopped run resumes
    where it stopped, added losses or seeds reuse what was measured, and a model whose
    evaluation is kept is neither trained nor restored (its checkpoint can go)."""
    exp = trainer.experiment_config(LossComparisonConfig, config)
    configs = {(name, seed): base.override(config, {**loss_fields(name), "training.seed": seed})
               for name in exp.losses for seed in exp.train_seeds}
    for c in configs.values():  # every loss checked before anything trains
        trainer.validate_config(c)
    key_eval = jax.random.key(exp.seed)
    fingerprint = common.config_fingerprint(config, _CHOOSERS)
    steps = int(config.training.num_train_steps)
    # the exact score's row, the held-out data and the sampling SDE: the first model's
    sde, gmm = common.sde_and_mixture(configs[exp.losses[0], exp.train_seeds[0]])
    evaluator = Evaluator(key_eval, sde, gmm, exp,
                          gmm.sample(jax.random.fold_in(key_eval, 1),
                                     exp.num_heldout).astype(jnp.float32))

    def kept(cache, group, score_fn):
        """``evaluator.runs(score_fn(), group)``, or what ``cache`` kept of it (then
        ``score_fn`` is not called)."""
        return cache.unit(f"{_UNIT}_g{group}",
                          lambda: (evaluator.runs(score_fn(), group), None))[0]

    cache = common.ResultCache(workdir, {"config": fingerprint, "score": "exact"})
    exact, exact_runs = jax.tree_util.Partial(gmm.score_fn(sde)), []
    for g in range(len(exp.train_seeds)):
        exact_runs += kept(cache, g, lambda: exact)
    rows, all_runs = [{"loss": "exact score", "config": "", **summarize(exact_runs)}], []
    for i, name in enumerate(common.progress(exp.losses, "compare_losses: losses",
                                             unit="loss")):
        runs = []
        for group, seed in enumerate(exp.train_seeds):
            cache = common.ResultCache(workdir, {"config": fingerprint, "loss": name,
                                                 "train_seed": seed, "step": steps})
            model_dir = os.path.join(workdir, f"model_{i}_s{seed}")
            runs += kept(cache, group, lambda c=configs[name, seed], d=model_dir:
                         common.trained_score(c, d))
        shortcut = ",".join(f"{k}={v}" for k, v in loss_fields(name).items())
        rows.append({"loss": name, "config": shortcut, **summarize(runs)})
        all_runs += [{"loss": name, **r} for r in runs]
    paths = write_tables(workdir, rows)
    paths.update(common.write_csv(workdir, "runs", all_runs,
                                     ["loss", "group", "run", *METRICS, *HELDOUT.values()]))
    paths.update(write_claims(workdir, rows, all_runs))
    paths.update(write_figure(workdir, rows, len(exp.train_seeds)))
    return paths


def rerun_check(committed: str, rerun: str) -> dict[str, tuple[int, int]]:
    """How many cells of ``committed``'s ``losses.csv`` (a workdir or
    ``results/compare_losses``) a re-run in ``rerun`` (other training and sampling seeds) lands
    inside, per metric: ``{metric: (inside, cells)}`` (``claims.rerun_coverage``)."""
    return claims.rerun_check(committed, rerun, "losses.csv", ("loss",), METRICS)


def rewrite_reports(workdir: str, num_seeds: int) -> dict[str, str]:
    """``losses.md``, the claims and ``losses.png`` of a finished run written again from its
    ``losses.csv`` (and ``runs.csv``, where there is one: paired claims) by the current code;
    returns their paths."""
    rows = common.read_table(os.path.join(workdir, "losses.csv"))
    path = os.path.join(workdir, "runs.csv")
    runs = common.read_table(path) if os.path.exists(path) else None
    paths = write_tables(workdir, rows)
    paths.update(write_claims(workdir, rows, runs))
    paths.update(write_figure(workdir, rows, num_seeds))
    return paths


def main(argv=None):
    cli.run_main(run, common.config_file("compare_losses"), argv, settings=LossComparisonConfig)


if __name__ == "__main__":
    main()
