r"""Samplers on testbeds that favour none of them, measured with the oracle's exact error.

The main job's data, a pair of unit-variance Gaussians, favours some samplers (its README
section says which). This module runs every sampler at every NFE target on four testbeds:

* ``pair``: the main job's data in d = 2 (kept, for comparison);
* ``anisotropic``: ``sde_lib.anisotropic_mixture_2d``, three components with unequal weights and
  small, unequal, rotated covariances (standard deviations 0.03 to 0.7);
* ``small_ring``: eight equal modes of sd 0.05 on a circle of radius 2;
* ``pair64``: the seeds' Gaussian pair in d = 64, learned by the seeds' Transformer denoiser
  (``experiments/configs/testbeds.py``, one model per training seed in
  ``<workdir>/model_s<seed>``; a second run in the same workdir reloads them, and one whose
  runs are all kept needs none), sampled with the models and with the exact score.

Every run is measured against the exact mixture. A cell is the mean over its groups of runs
(``claims.spread``): for the exact score each of the ``sample_seeds`` sampling seeds is a group,
for the Transformer each training seed (``model_sample_seeds`` runs each), so the model cells'
standard errors hold the training seeds' spread. The measures:

* ``kl`` (deterministic samplers: PF-ODE Euler/Heun, DDIM): KL(sampler || data) in nats by the
  change of variables along the sampler's map (``sde_lib.evaluation.flow_kl``), with each run's
  Monte Carlo standard error ``kl_mc_se``; the exact score in every testbed, not the Transformer
  (a 64 x 64 Jacobian through it per point is out of this budget);
* ``path`` (stochastic samplers, exact score): the pathwise RMS error against a ``ref_steps``-step
  run of the same sampler from the same prior draws on the same Brownian path
  (``sde_lib.evaluation.coupled_error``), with each run's Monte Carlo standard error ``path_mc_se``;
* ``sw2``: sliced W2 to as many exact samples, with the floor row (``FLOOR_PAIRS`` pairs of
  independent exact sets, every measure below);
* ``weight_err``: the largest error of a mode weight, and ``weight_z``, the largest ratio of a
  weight error to its standard error (``sde_lib.evaluation.mode_errors``: above ~3 the sampler
  gets that weight wrong);
* ``mean_err``, ``cov_err``: the largest per-mode mean error and relative covariance error (the
  floor row gives their values for exact samples);
* ``mmd_reject``: the fraction of runs whose MMD permutation test against exact samples
  (``mmd_points`` of each, ``sde_lib.evaluation.mmd_test``) rejects at level 0.05 (0.05 for
  exact samples).

Within each testbed, score and NFE target every pair of samplers is compared on each measure
they share by the rule of ``experiments.claims`` (``claims.md/csv``; on sliced W2 and the
mode-weight error the exact samples' floor is one of the items), and the table the README quotes
is generated from them (``headline.md``, ``headline``: per measure and NFE, the lowest cell and
those not resolved from it). Writes ``results.csv/md``, ``summary.md`` (per testbed: the sampler
error, sliced W2 and mode tables by sampler and NFE, ``mean +- h`` with ``h`` the 95% re-run
half-width), the claims, ``testbeds.png`` and ``samples.png`` into the workdir.

Run: ``python -m experiments.testbeds --workdir runs/testbeds``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os

import jax
import numpy as np
from tqdm import tqdm

import sde_lib
import trainer
from experiments import claims, common
from experiments.configs import base
from sde_lib import evaluation, sampling
from trainer import cli, reporting

EXACT_TESTBEDS = {
    "pair": lambda: sde_lib.gaussian_pair(jax.random.fold_in(jax.random.PRNGKey(0), 0), 2),
    "anisotropic": sde_lib.anisotropic_mixture_2d,
    "small_ring": lambda: sde_lib.ring_of_gaussians(num_components=8, radius=2.0, std=0.05),
}
LEARNED_TESTBEDS = ("pair64",)  # the model config's data (gaussian_pair, data.dim = 64)
TESTBEDS = (*EXACT_TESTBEDS, *LEARNED_TESTBEDS)
FLOOR_PAIRS = 20  # pairs of independent exact sample sets behind the floor row


@dataclasses.dataclass(frozen=True)
class TestbedsConfig:
    """The ``experiment`` section of ``experiments/configs/testbeds.py``.

    Attributes:
      testbeds: names among ``TESTBEDS``.
      methods: fixed-step sampler names (``sde_lib.SAMPLERS``; not ``pc``, whose error is not
        pathwise-comparable, nor the adaptive solver).
      nfes: NFE targets; a sampler takes ``Sampler.num_steps_for(nfe)`` steps.
      model_nfes: the NFE targets of the Transformer runs (a subset of ``nfes``).
      model_methods: the samplers run with the Transformer (a subset of ``methods``).
      num_samples: samples per run (and exact samples to compare with).
      sample_seeds: sampling seeds of the exact score (each a group of one run).
      model_sample_seeds: sampling seeds per Transformer (its runs in its training seed's
        group).
      train_seeds: one Transformer per training seed.
      ref_steps: steps of the reference run of the pathwise error.
      flow_kl_points: prior draws per run for the flow KL.
      mmd_points: samples of each set in the MMD test.
      seed: sampling and evaluation seed.
    """

    testbeds: tuple[str, ...]
    methods: tuple[str, ...]
    nfes: tuple[int, ...]
    model_nfes: tuple[int, ...]
    model_methods: tuple[str, ...]
    num_samples: int
    sample_seeds: int
    model_sample_seeds: int
    train_seeds: tuple[int, ...]
    ref_steps: int
    flow_kl_points: int
    mmd_points: int
    seed: int

    def __post_init__(self):
        unknown = sorted(set(self.testbeds) - set(TESTBEDS))
        if unknown:
            raise ValueError(f"testbeds {unknown} are not testbeds; valid: {list(TESTBEDS)}")
        valid = [m for m, s in sde_lib.SAMPLERS.items() if s.affine and not s.adaptive]
        bad = sorted(set(self.methods) - set(valid))
        if bad:
            raise ValueError(f"methods {bad} cannot be measured here; valid: {valid}")
        if not set(self.model_methods) <= set(self.methods):
            raise ValueError(f"model_methods must be a subset of methods {self.methods}, got "
                             f"{self.model_methods}")
        if not self.nfes or min(self.nfes) < 2 or not set(self.model_nfes) <= set(self.nfes):
            raise ValueError(f"nfes must be integers >= 2 and model_nfes a subset of them, got "
                             f"{self.nfes!r} and {self.model_nfes!r}")
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must be integers >= 0, got {self.train_seeds!r}")
        for name in ("num_samples", "sample_seeds", "model_sample_seeds", "ref_steps",
                     "flow_kl_points", "mmd_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.mmd_points > self.num_samples:
            raise ValueError(f"mmd_points must be <= num_samples={self.num_samples}, got "
                             f"{self.mmd_points}")


def _valid(sde, method, num_steps) -> bool:
    try:
        sampling.build_sampler(sde, lambda x, t: x, method, num_steps)
    except ValueError:  # e.g. reverse diffusion with a beta_i >= 1
        return False
    return True


def sample_metrics(rng, gmm, x, exact, mmd_points) -> dict:
    """The sample-based measures of one run ``x`` against the exact set ``exact``."""
    if not np.all(np.isfinite(x)):
        return {"sw2": math.inf, "weight_err": math.inf, "weight_z": math.inf,
                "mean_err": math.inf, "cov_err": math.inf, "mmd_reject": 1.0}
    k_sw, k_mode, k_mmd = jax.random.split(rng, 3)
    e = evaluation.mode_errors(k_mode, gmm, x)
    _, p = evaluation.mmd_test(k_mmd, x[:mmd_points], exact[:mmd_points])
    return {"sw2": common.sliced_wasserstein(x, exact, k_sw),
            "weight_err": float(np.max(np.abs(e.weight))),
            "weight_z": float(np.max(np.abs(e.weight) / e.weight_se)),
            "mean_err": float(np.max(e.mean)), "cov_err": float(np.max(e.cov)),
            "mmd_reject": float(p <= 0.05)}


SPREAD = ("kl", "path", "sw2", "weight_err", "weight_z", "mean_err", "cov_err", "mmd_reject")


def _summarize(runs) -> dict:
    """Each measure's ``claims.spread`` over ``runs`` (each with its ``group``); the runs' own
    Monte Carlo errors ``kl_mc_se`` and ``path_mc_se`` as their largest value."""
    out = {"groups": len({r["group"] for r in runs}), "runs": len(runs)}
    for name in SPREAD:
        if name in runs[0]:
            out.update(claims.spread(runs, name))
    for name in ("kl_mc_se", "path_mc_se"):
        if name in runs[0]:
            out[name] = max(r[name] for r in runs)
    return out


def _testbed_run(fn, key, score_of, rng_metric, gmm, exact, exp, kl_fn, path_of, keep):
    """One sampler run's measures (``sample_metrics``; the flow KL with ``kl_fn``; the pathwise
    error with ``path_of``, a function of the key) and its samples if ``keep``; ``score_of()``
    gives the score function (a model is trained or restored only for a run not kept)."""
    score_fn = score_of()
    x, nfe = fn(key, score_fn)
    x = np.asarray(x)
    run = sample_metrics(rng_metric, gmm, x, exact, exp.mmd_points) | {"nfe": int(nfe)}
    if kl_fn is not None:
        kl, kl_se = kl_fn(key, score_fn)
        run.update(kl=float(kl), kl_mc_se=float(kl_se))
    if path_of is not None:
        path, path_se, _ = path_of(key)
        run.update(path=float(path[0]), path_mc_se=float(path_se[0]))
    return run, x if keep else None


def evaluate_testbed(rng, name, sde, gmm, score_fns, exp, progress, caches):
    """Rows for one testbed: the floor, then one per (score, method, NFE target).
    ``score_fns`` is ``{kind: [callable giving a score function]}``; ``caches`` (``{kind:
    [common.ResultCache per score of score_fns[kind]]}``) keeps each finished run, keyed by its
    sampler, steps and run index; a kept run is read, not made again (nor its score made)."""
    n, dim = exp.num_samples, gmm.dim
    rng_exact, rng_metric, rng_sample = jax.random.split(rng, 3)

    def exact(u):  # run u's own exact set
        return np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 100 + u), n))

    floor = [sample_metrics(jax.random.fold_in(rng_metric, i), gmm,
                            np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 1), n)),
                            np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 2), n)),
                            exp.mmd_points) | {"group": i} for i in range(FLOOR_PAIRS)]
    rows = [{"testbed": name, "score": "exact samples", "sampler": "-", "nfe_target": 0,
             **_summarize(floor)}]
    samples = {}
    for method in exp.methods:
        sampler = sde_lib.SAMPLERS[method]
        deterministic = sampler.deterministic(sampler.check_options({}))
        for kind, fns in score_fns.items():
            nfes = exp.nfes if kind == "exact" else exp.model_nfes
            if kind != "exact" and method not in exp.model_methods:
                continue
            for nfe_target in nfes:
                num_steps = sampler.num_steps_for(nfe_target)
                row = {"testbed": name, "score": kind, "sampler": method,
                       "nfe_target": nfe_target}
                progress.update(1)
                if not _valid(sde, method, num_steps):
                    rows.append(row)
                    continue
                fn = common.sampler_fn(sde, (n, dim), method, num_steps, {})
                kl_fn = (common.flow_kl_fn(sde, gmm, exp.flow_kl_points, dim, method, num_steps)
                         if deterministic and kind == "exact" else None)
                runs = []
                seeds = exp.sample_seeds if kind == "exact" else exp.model_sample_seeds
                for i, score_of in enumerate(fns):
                    for r in range(seeds):
                        u = i * seeds + r  # the run's own sampling and metric keys
                        key = jax.random.fold_in(rng_sample, u)
                        path_of = (functools.partial(
                            evaluation.coupled_error, sde=sde, score_fn=score_of(),
                            shape=(n, dim), method=method, nums_steps=(num_steps,),
                            ref_steps=exp.ref_steps)
                            if not deterministic and kind == "exact" else None)
                        one_run = functools.partial(
                            _testbed_run, fn, key, score_of,
                            jax.random.fold_in(rng_metric, 1000 + u), gmm, exact(u), exp,
                            kl_fn, path_of, i == 0 and r == 0)
                        run, x = caches[kind][i].unit(f"{method}_{num_steps}_u{u}", one_run,
                                                      with_array=i == 0 and r == 0)
                        runs.append(dict(run, group=r if kind == "exact" else i))
                        if x is not None:
                            samples[(kind, method, nfe_target)] = np.asarray(x)
                nfe = runs[-1]["nfe"]
                rows.append({**row, "nfe": int(nfe), **_summarize(runs)})
    return rows, samples


# ----- reporting ---------------------------------------------------------------------------------

COLUMNS = ("testbed", "score", "sampler", "nfe_target", "nfe", "groups", "runs",
           *[c for m in SPREAD for c in (m, f"{m}_se", f"{m}_sd", f"{m}_within_sd")],
           "kl_mc_se", "path_mc_se")
# the measures compared by the claims, and their labels
LABELS = {"kl": "KL to the data (nats)", "path": "pathwise RMS error",
          "sw2": "sliced W2", "weight_err": "largest mode-weight error"}


def _cell(row, name) -> str | None:
    """``mean +- h`` of ``row``'s ``name``, ``h`` the 95% re-run half-width over the row's
    groups (``common.rerun_cell``); ``None`` where the row has no value."""
    if row.get(name) is None:
        return None
    return common.rerun_cell(row, name, int(row.get("groups") or 0))


def _grid(rows, testbed, score, methods, nfes, cell) -> list[dict]:
    table = []
    for method in methods:
        cells = {r["nfe_target"]: cell(r) for r in rows if r["testbed"] == testbed
                 and r["score"] == score and r["sampler"] == method}
        if any(v is not None for v in cells.values()):
            table.append({"sampler": method, **{str(n): cells.get(n) for n in nfes}})
    return table


def write_summary(workdir, rows, exp) -> dict[str, str]:
    """``summary.md``: per testbed and score, the sampler error (flow KL or pathwise error),
    sliced W2 and the mode errors, by sampler and NFE target, ``mean +- h`` (``_cell``)."""
    parts = []
    for testbed in exp.testbeds:
        floor = [r for r in rows if r["testbed"] == testbed and r["score"] == "exact samples"][0]
        scores = ["exact"] + (["model"] if testbed in LEARNED_TESTBEDS else [])
        for score in scores:
            nfes = exp.nfes if score == "exact" else exp.model_nfes
            methods = exp.methods if score == "exact" else exp.model_methods
            groups = max([r.get("groups") or 0 for r in rows
                          if r["testbed"] == testbed and r["score"] == score])
            over = ("sampling seeds" if score == "exact" else
                    f"training seeds, {exp.model_sample_seeds} sampling run(s) each")
            head = (f"### {testbed}, {score} score (mean over {groups} {over} +- the 95% "
                    f"interval a re-run with as many other seeds lands in)")
            cols = ["sampler", *map(str, nfes)]
            if score == "exact":
                kl = _grid(rows, testbed, score, methods, nfes, lambda r: _cell(r, "kl"))
                se = max([r["kl_mc_se"] for r in rows if r["testbed"] == testbed
                          and r.get("kl_mc_se") is not None], default=math.nan)
                path = _grid(rows, testbed, score, methods, nfes, lambda r: _cell(r, "path"))
                pse = max([r["path_mc_se"] for r in rows if r["testbed"] == testbed
                           and r.get("path_mc_se") is not None], default=math.nan)
                parts.append(f"{head}\n\nKL(sampler || data), nats, deterministic samplers "
                             f"(each run's Monte Carlo standard error <= {se:.2g}):\n\n"
                             + common.markdown_table(kl, cols)
                             + f"\nPathwise RMS error to {exp.ref_steps} steps on the same "
                               f"Brownian path, stochastic samplers (each run's Monte Carlo "
                               f"standard error <= {pse:.2g}):\n\n"
                             + common.markdown_table(path, cols))
            else:
                parts.append(head + "\n")
            sw2 = _grid(rows, testbed, score, methods, nfes, lambda r: _cell(r, "sw2"))
            parts.append(f"Sliced W2 to exact samples (floor, exact vs exact over "
                         f"{floor['groups']} pairs: {_cell(floor, 'sw2')}):\n\n"
                         + common.markdown_table(sw2, cols))
            mode = _grid(rows, testbed, score, methods, nfes, lambda r: None if r.get(
                "weight_err") is None else (f"{_cell(r, 'weight_err')} (z "
                                            f"{r['weight_z']:.1f}) / "
                                            f"{common.fmt(r['mean_err'])} / "
                                            f"{common.fmt(r['mmd_reject'])}"))
            parts.append(f"Largest mode-weight error (mean largest z) / largest mode-mean error "
                         f"/ fraction of MMD tests rejecting at 0.05 (floor: "
                         f"{_cell(floor, 'weight_err')} (z {floor['weight_z']:.1f}) / "
                         f"{common.fmt(floor['mean_err'])} / "
                         f"{common.fmt(floor['mmd_reject'])}):\n\n"
                         + common.markdown_table(mode, cols))
    return {"summary.md": reporting.write_atomic(os.path.join(workdir, "summary.md"),
                                                 "\n".join(parts))}


FLOOR = "exact samples"  # the floor's name in the claims


def _context(testbed, score, nfe_target) -> str:
    return f"{testbed} / {score} score / NFE {nfe_target}"


def testbed_claims(rows) -> list[dict]:
    """Within each testbed, score and NFE target, every pair of samplers compared on each of
    ``LABELS`` that both have (``experiments.claims``' rule, each cell's standard error over
    its groups); on sliced W2 and the mode-weight error the floor (exact samples against exact
    samples) is compared as one more item, ``FLOOR``."""
    out = []
    cells: dict[tuple, list] = {}
    for r in rows:
        if r["score"] != FLOOR:
            cells.setdefault((r["testbed"], r["score"], r["nfe_target"]), []).append(r)
    floors = {r["testbed"]: r for r in rows if r["score"] == FLOOR}
    for (testbed, score, nfe_target), members in cells.items():
        for name, label in LABELS.items():
            items = [(r["sampler"], r) for r in members if claims.comparable(r, name)]
            if name in ("sw2", "weight_err") and claims.comparable(floors[testbed], name):
                items.append((FLOOR, floors[testbed]))
            out += [claims.compare(_context(testbed, score, nfe_target), label, a, ra[name],
                                   ra[f"{name}_se"], b, rb[name], rb[f"{name}_se"])
                    for (a, ra), (b, rb) in itertools.combinations(items, 2)]
    return out


# results/README.md quotes ``headline`` of the committed claims between these lines
README_MARKERS = claims.readme_markers("testbeds", "experiments.testbeds.headline")


def headline(rows_of_claims) -> str:
    """The table the README quotes, from the claims alone: one row per testbed, score and
    measure, one column per NFE target; each cell the item with the lowest mean and, after
    ``~``, those not resolved from it (``claims.leader``)."""
    table: dict[tuple, dict] = {}
    nfes: list[str] = []
    for (context, metric), (best, _, tied, _) in claims.leader(rows_of_claims).items():
        testbed, score, nfe = context.split(" / ")
        nfe = nfe.removeprefix("NFE ")
        nfes += [nfe] if nfe not in nfes else []
        cell = best + (f" ~ {', '.join(tied)}" if tied else "")
        table.setdefault((testbed, score, metric), {})[nfe] = cell
    nfes.sort(key=int)
    rows = [{"testbed": t, "score": s.removesuffix(" score"), "measure": m, **cells}
            for (t, s, m), cells in table.items()]
    return ("Lowest cell per testbed, score, measure and NFE target; after ~ the cells not "
            "resolved from it (|z| < 3).\n\n"
            + common.markdown_table(rows, ["testbed", "score", "measure", *nfes]))


def write_claims(workdir, rows) -> dict[str, str]:
    """``claims.md``/``.csv`` (``testbed_claims``) and ``headline.md`` (``headline``)."""
    made = testbed_claims(rows)
    return claims.write_with_headline(workdir, made, headline(made))


def metrics_figure(rows, exp):
    """Per testbed (columns), the flow KL of the deterministic samplers, the pathwise error of
    the stochastic ones and the sliced W2 (rows) against NFE, exact score, mean with +-1 sd
    bands (``testbeds.png``)."""
    plt = reporting.pyplot()
    panels = (("kl", "KL(sampler || data), nats"), ("path", "pathwise RMS error"),
              ("sw2", "sliced W2 to exact samples"))
    fig, axes = plt.subplots(len(panels), len(exp.testbeds), squeeze=False,
                             figsize=(4.4 * len(exp.testbeds), 3.4 * len(panels)))
    colors = dict(zip(exp.methods, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2,
                      strict=False))
    for j, testbed in enumerate(exp.testbeds):
        floor = [r for r in rows if r["testbed"] == testbed and r["score"] == "exact samples"][0]
        for i, (metric, label) in enumerate(panels):
            ax = axes[i, j]
            for method in exp.methods:
                pts = sorted((r["nfe"], r[metric], r.get(f"{metric}_sd") or 0.0) for r in rows
                             if r["testbed"] == testbed and r["score"] == "exact"
                             and r["sampler"] == method and r.get(metric) is not None
                             and math.isfinite(r[metric]))
                if pts:
                    nfe, mean, sd = map(np.array, zip(*pts, strict=True))
                    ax.plot(nfe, np.maximum(mean, 1e-4), marker="o", ms=3, label=method,
                            color=colors[method])
                    ax.fill_between(nfe, np.maximum(mean - sd, 1e-4), mean + sd, alpha=0.15,
                                    color=colors[method])
            if metric == "sw2":
                ax.axhspan(floor["sw2"] - floor["sw2_sd"], floor["sw2"] + floor["sw2_sd"],
                           color="k", alpha=0.1, label="exact vs exact (+-1 sd)")
            ax.set(xscale="log", yscale="log", title=f"{testbed}, exact score",
                   xlabel="NFE (score evaluations)", ylabel=label)
            reporting.plain_log_ticks(ax)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="best")
    fig.suptitle("Exact score: mean over the sampling seeds, bands +-1 sd between them")
    fig.tight_layout()
    return fig


def samples_figure(samples, gmms, flat, exp):
    """``samples.png``: the exact score's samples of each method (columns) at the smallest NFE
    target for each 2-D testbed of ``flat`` (rows), over the data's log-density contours."""
    plt = reporting.pyplot()
    nfe = min(exp.nfes)
    fig, axes = plt.subplots(len(flat), len(exp.methods), squeeze=False,
                             figsize=(2.6 * len(exp.methods), 2.7 * len(flat)))
    for i, testbed in enumerate(flat):
        gmm = gmms[testbed]
        lim = float(np.abs(np.asarray(gmm.means)).max()) + 1.5
        g = np.linspace(-lim, lim, 150)
        xx, yy = np.meshgrid(g, g)
        logp = np.asarray(gmm.log_prob(np.stack([xx.ravel(), yy.ravel()], 1)))
        for j, method in enumerate(exp.methods):
            ax = axes[i, j]
            ax.contour(xx, yy, logp.reshape(xx.shape), levels=np.arange(-12, 4, 2),
                       colors="k", linewidths=0.4)
            x = samples[testbed].get(("exact", method, nfe))
            if x is not None:
                ax.scatter(x[:1000, 0], x[:1000, 1], s=1, alpha=0.4)
            else:  # e.g. reverse diffusion, whose few-step chain has a beta_i >= 1
                ax.text(0.5, 0.5, f"not defined at\nNFE {nfe}", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{testbed}: {method}",
                   xlabel="x_1", ylabel="x_2")
            ax.title.set_fontsize(7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"exact score, NFE target {nfe}; contours: log-density of the data "
                 f"(every 2 nats)")
    fig.tight_layout()
    return fig


def write_figures(workdir, rows, samples, gmms, exp) -> dict[str, str]:
    """``testbeds.png`` (``metrics_figure``) and ``samples.png`` (``samples_figure``)."""
    paths = reporting.save_figure(metrics_figure(rows, exp), workdir, "testbeds.png")
    flat = [t for t in exp.testbeds if gmms[t].dim == 2]
    if flat:
        paths.update(reporting.save_figure(samples_figure(samples, gmms, flat, exp), workdir,
                                           "samples.png"))
    return paths


# ----- the job ----------------------------------------------------------------------------------

# left out of the fingerprint of the kept runs: they choose which runs are made (a run's
# testbed and its position in ``testbeds``, which seeds its keys, are in the fingerprint)
_CHOOSERS = ("testbeds", "methods", "nfes", "model_nfes", "model_methods", "train_seeds")


def testbeds(config, workdir: str) -> dict[str, str]:
    """Runs every testbed, training (or reloading) each Transformer where one of its runs is
    not kept; returns the paths written. Each finished sampler run is kept in
    ``<workdir>/partial`` (``common.ResultCache``), so a stopped run resumes where it stopped,
    added samplers, NFEs or seeds reuse the runs made, and a Transformer whose runs are all kept
    is neither trained nor restored (its checkpoint can go)."""
    exp = trainer.experiment_config(TestbedsConfig, config)
    learned = [t for t in exp.testbeds if t in LEARNED_TESTBEDS]
    configs = {seed: base.override(config, {"training.seed": seed})
               for seed in exp.train_seeds} if learned else {}
    for c in configs.values():  # every model checked before anything trains
        trainer.validate_config(c)
    sde = sde_lib.VPSDE()
    rng = jax.random.key(exp.seed)
    fingerprint = common.config_fingerprint(config, _CHOOSERS)
    rows, samples, gmms = [], {}, {}
    for index, testbed in enumerate(exp.testbeds):
        where = {"config": fingerprint, "testbed": testbed, "index": index}
        caches = {"exact": [common.ResultCache(workdir, {**where, "score": "exact"})]}
        if testbed in LEARNED_TESTBEDS:  # the SDE and data the models are trained on
            sde, gmm = common.sde_and_mixture(next(iter(configs.values())))
            steps = int(config.training.num_train_steps)
            model_fns = [functools.cache(functools.partial(
                common.trained_score, c, os.path.join(workdir, f"model_s{seed}")))
                for seed, c in configs.items()]
            caches["model"] = [common.ResultCache(workdir, {**where, "train_seed": seed,
                                                            "step": steps})
                               for seed in configs]
        else:
            gmm, model_fns = EXACT_TESTBEDS[testbed](), None
        exact_fn = jax.tree_util.Partial(gmm.score_fn(sde))
        score_fns = {"exact": [lambda f=exact_fn: f]}
        if model_fns is not None:
            score_fns["model"] = model_fns
        total = len(exp.methods) * len(exp.nfes) + (
            len(exp.model_methods) * len(exp.model_nfes) if "model" in score_fns else 0)
        with tqdm(total=total, desc=f"{testbed}", unit="setting") as progress:
            tb_rows, samples[testbed] = evaluate_testbed(jax.random.fold_in(rng, index), testbed,
                                                         sde, gmm, score_fns, exp, progress,
                                                         caches)
        rows += tb_rows
        gmms[testbed] = gmm
    paths = common.write_table(workdir, "results", rows, COLUMNS)
    paths.update(write_summary(workdir, rows, exp))
    paths.update(write_claims(workdir, rows))
    paths.update(write_figures(workdir, rows, samples, gmms, exp))
    return paths


def rerun_check(committed: str, rerun: str) -> dict[str, tuple[int, int]]:
    """How many cells of ``committed``'s ``results.csv`` (a workdir or ``results/testbeds``) a
    re-run in ``rerun`` (other training and sampling seeds, the same settings) lands inside, per
    compared measure: ``{measure: (inside, cells)}`` (``claims.rerun_coverage``)."""
    return claims.rerun_check(committed, rerun, "results.csv",
                              ("testbed", "score", "sampler", "nfe_target"), tuple(LABELS))


def rewrite_reports(config, workdir: str) -> dict[str, str]:
    """``summary.md``, the claims and ``testbeds.png`` of a finished run (of ``config``)
    written again from its ``results.csv`` by the current code; returns their paths."""
    exp = trainer.experiment_config(TestbedsConfig, config)
    rows = common.read_table(os.path.join(workdir, "results.csv"))
    paths = write_summary(workdir, rows, exp)
    paths.update(write_claims(workdir, rows))
    paths.update(reporting.save_figure(metrics_figure(rows, exp), workdir, "testbeds.png"))
    return paths


run = testbeds


def main(argv=None):
    cli.run_main(testbeds, common.config_file("testbeds"), argv, settings=TestbedsConfig)


if __name__ == "__main__":
    main()
