r"""The main job: reverse-SDE vs DDPM sampling (and every other sampler) on Gaussian-mixture data.

For each dimension ``d`` (default 2; 2 and 16 in the config's ``FULL_GRID``), the seeds' mixture
of two identical Gaussians with random shifts is the data. One score model per training seed
``s`` is trained on it (``trainer.train_and_evaluate``, the config
``experiments/configs/compare_samplers.py`` with ``data.dim = d`` and ``training.seed = s``, in
``<workdir>/model_d<d>_s<s>``; a second run in the same workdir reuses them, and every sampler
run already made, kept in ``<workdir>/partial``), then every
sampler runs at every NFE target with each model and with the oracle's exact score,
``sample_seeds`` runs per training seed (each its own prior draw, noise and set of exact samples
to compare with, the same for every sampler and score; the exact score runs in as many groups),
so sampler error (exact rows) and model error (the difference) are separated. Each run is
measured against the exact mixture:

* ``mmd2``: the MMD^2 to the mixture itself (``sde_lib.mixture_mmd``, the kernel the mean of
  Gaussian kernels at ``mmd_bandwidths`` x sqrt(d)): the data side is exact, so its only noise
  is the run's own samples, and it is zero in expectation for exact samples;
* ``sw2``: sliced 2-Wasserstein distance to as many exact samples (``experiments/common.py``); the
  ``exact samples`` row is its Monte Carlo floor, mean and sd over 8 pairs of independent exact
  sets;
* ``kl`` (deterministic samplers in ``flow_kl_dims``): KL(sampler || data) in nats by the change
  of variables along the sampler's discrete map (``sde_lib.evaluation.flow_log_density``), over
  the first run of each group, each with its own standard error ``kl_run_se``; the ``exact
  samples`` row holds the limit every deterministic sampler's KL tends to with the exact score,
  ``flow_limit = KL(prior || p_T)`` (``sde_lib.evaluation.flow_limit_kl``);
* ``nll``: mean true negative log-density of the samples, nats/dim (exact samples: the entropy);
* ``mode_err``: largest error of the mode weights (fraction per component minus its weight);
* ``wall_s``: wall time of the compiled sampler (compile time separately, ``compile_s``).

Every cell is the mean over the groups (the training seeds) with its standard error from the spread
between them (``claims.spread``: training and sampling noise together, floored at the sampling's
share), and the sd within a group (the sampling's share) beside it; the tables print the 95%
interval a re-run with as many other seeds lands in (``claims.rerun_halfwidth``). Per dimension, the
probability-flow NLL of held-out data in bits/dim (exact divergence) for the exact score and each
model; and, with no Monte Carlo at all, the exact KL of every affine sampler on a Gaussian with
unequal variances (``sde_lib.evaluation.gaussian_sampler_law``), over ``gaussian_seeds`` data means.
Every comparison the tables support is written by the rule of ``experiments.claims`` (``claims.md``,
``claims.csv``), and the statements the README quotes are generated from them (``headline.md``).
Writes ``results.csv/md``, ``summary.md`` (the tables by sampler and NFE), ``likelihood.csv/md``,
``gaussian.csv/md``, the claims, ``quality_vs_nfe.png`` (MMD^2), ``sw2_vs_nfe.png`` and
``samples_2d.png`` into the workdir and prints the paths. ``rewrite_reports`` writes a finished
run's reports again from its tables; ``rerun_check`` counts the cells of one run that a re-run with
other seeds lands inside.

Run: ``python -m experiments.compare_samplers --workdir runs/compare_samplers``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import sde_lib
import trainer
from experiments import claims, common
from experiments.configs import base
from sde_lib import evaluation
from trainer import cli, reporting

# adaptive solves take tolerances, not steps: one tolerance per NFE column, the NFE is measured
ADAPTIVE_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4)
REFERENCE = "euler_maruyama"  # also run at ``reference_steps``: the quality target
# a deterministic sampler has converged when its exact KL is within this factor of its limit
# KL(prior || p_T) (the samplers whose last step is the Tweedie mean add about 10% to it)
LIMIT_FACTOR = 1.5


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    """The ``experiment`` section of ``experiments/configs/compare_samplers.py``.

    Attributes:
      dims: data dimensions (one trained model per training seed each).
      methods: sampler names (``sde_lib.SAMPLERS``).
      nfes: NFE targets; a sampler takes ``Sampler.num_steps_for(nfe)`` steps.
      num_samples: samples per run (and exact samples to compare with).
      num_heldout: held-out points for the probability-flow NLL.
      train_seeds: ``training.seed`` of each trained model (one per seed and dimension); every
        cell's interval is over them.
      sample_seeds: sampling seeds per training seed (each with its own prior draw, noise and
        exact reference set); the exact score runs as often, in as many groups.
      mmd_bandwidths: the Gaussian kernels' bandwidths of the MMD^2, in units of ``sqrt(d)``.
      gaussian_dim, gaussian_var: the Gaussian of the exact (Monte-Carlo-free) table: its
        dimension and the range of its log-spaced variances.
      gaussian_seeds: the exact table's data means ``mu ~ N(0, I)``, one per seed (``seed``,
        ``seed + 1``, ...); its cells are the mean and spread over them.
      flow_kl_dims, flow_kl_points: the dimensions in which the deterministic samplers' output
        KL to the mixture is computed by change of variables (``sde_lib.evaluation.flow_kl``,
        a d x d Jacobian per point), and its number of prior draws per run.
      reference_steps: Euler-Maruyama also runs with this many steps, the quality each sampler's
        "NFE to reach the reference" is measured against; 0 for none.
      seed: sampling and evaluation seed.
    """

    dims: tuple[int, ...]
    methods: tuple[str, ...]
    nfes: tuple[int, ...]
    num_samples: int
    num_heldout: int
    train_seeds: tuple[int, ...]
    sample_seeds: int
    mmd_bandwidths: tuple[float, ...]
    gaussian_dim: int
    gaussian_var: tuple[float, float]
    gaussian_seeds: int
    flow_kl_dims: tuple[int, ...]
    flow_kl_points: int
    reference_steps: int
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
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must be integers >= 0, got {self.train_seeds!r}")
        if len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"train_seeds must be distinct, got {self.train_seeds!r}")
        if not self.mmd_bandwidths or min(self.mmd_bandwidths) <= 0:
            raise ValueError(f"mmd_bandwidths must be positive numbers (units of sqrt(d)), got "
                             f"{self.mmd_bandwidths!r}")
        if len(self.gaussian_var) != 2 or not 0 < self.gaussian_var[0] <= self.gaussian_var[1]:
            raise ValueError(f"gaussian_var must be (lo, hi) with 0 < lo <= hi, got "
                             f"{self.gaussian_var!r}")
        for name in ("num_samples", "num_heldout", "sample_seeds", "gaussian_dim",
                     "gaussian_seeds", "flow_kl_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_samples < 3:
            raise ValueError(f"num_samples must be >= 3 (the MMD's pairs), got "
                             f"{self.num_samples!r}")
        if self.reference_steps < 0:
            raise ValueError(f"reference_steps must be >= 0 (0: none), got "
                             f"{self.reference_steps!r}")


def sampler_settings(method: str, nfe: int, column: int) -> tuple[int, dict]:
    """``(num_steps, options)`` that spend about ``nfe`` score evaluations."""
    sampler = sde_lib.SAMPLERS[method]
    if sampler.adaptive:
        tol = ADAPTIVE_TOLERANCES[column]
        return 1, {"rtol": tol, "atol": tol}
    return sampler.num_steps_for(nfe), {}


METRICS = ("mmd2", "sw2", "nll", "mode_err")


def _metrics(gmm, x, exact, rng_sw, bandwidths) -> dict:
    """One run's sample measures: ``mmd2`` (to the mixture itself, the kernel the mean of
    Gaussian kernels at ``bandwidths``), ``sw2`` (to the exact set ``exact``), ``nll`` and
    ``mode_err``."""
    if not np.all(np.isfinite(x)):
        return dict.fromkeys(METRICS, math.inf)
    mmd = sde_lib.mixture_mmd(x, gmm, bandwidths)
    return {"mmd2": float(np.mean(np.asarray(mmd.mmd2))),
            "sw2": common.sliced_wasserstein(x, exact, rng_sw),
            "nll": common.mean_nll(gmm, x),
            "mode_err": float(np.max(np.abs(common.mode_weights(gmm, x)
                                            - np.asarray(gmm.weights))))}


def _summarize(runs: list[dict]) -> dict:
    """Each metric's ``spread`` over the runs; the flow KL over the runs that have it (the first
    sampling seed of each group: ``kl_runs``), with the mean of their own standard errors
    ``kl_run_se``, which floors its standard error as the sampling's share does the other
    metrics' (``claims.floored_se``); the wall time as a mean."""
    out = {"runs": len(runs), "groups": len({r["group"] for r in runs}),
           "wall_s": float(np.mean([r["wall_s"] for r in runs]))}
    for name in METRICS:
        out.update(claims.spread(runs, name))
    flow = [r for r in runs if "kl" in r]
    if flow:
        out.update(claims.spread(flow, "kl"), kl_runs=len(flow),
                   kl_run_se=float(np.mean([r["kl_run_se"] for r in flow])))
        out.pop("kl_within_sd")
        if out["kl_se"] is not None:  # one estimate per group, floored at its own Monte Carlo SE
            out["kl_se"] = claims.floored_se(out["kl_sd"], out["kl_run_se"], 1, out["kl_runs"])
    return out


def _sampler_run(compiled: list, fn, key, score_fn, metrics, kl_fn, keep: bool):
    """One sampler run: ``(row, samples if keep else None)``, the row the ``metrics`` of its
    samples, its wall time, NFE and (with ``kl_fn``: one run per group) its flow KL with its own
    standard error. ``compiled`` holds ``fn``'s compiled program once made (then its compile
    time is in this row)."""
    run = {}
    if not compiled:
        start = time.perf_counter()
        compiled.append(fn.lower(key, score_fn).compile())
        run["compile_s"] = time.perf_counter() - start
    start = time.perf_counter()
    x, nfe = jax.block_until_ready(compiled[0](key, score_fn))
    run["wall_s"] = time.perf_counter() - start
    x = np.asarray(x)
    run.update(metrics(x), nfe=int(nfe))
    if kl_fn is not None:
        kl, kl_se = kl_fn(key, score_fn)
        run.update(kl=float(kl), kl_run_se=float(kl_se))
    return run, x if keep else None


def evaluate_runs(rng, sde, gmm, score_fns, exp, progress, dim, caches):
    """One row per (score, method, NFE target) for data ``gmm`` in dimension ``dim``.

    ``score_fns["model"]`` holds one score per training seed, ``score_fns["exact"]`` the
    mixture's. Run ``u = i * sample_seeds + r`` (group ``i``, sampling seed ``r``) draws its
    prior sample and noise from ``fold_in(rng, u)``, the same for every sampler and score, and
    has its own set of exact samples; the model's group ``i`` is training seed ``i``, the exact
    score runs as many groups of as many runs. Each row holds every metric's ``claims.spread``.
    ``caches`` (``{kind: [common.ResultCache per score of score_fns[kind]]}``) keeps each
    finished run, keyed by its sampler, steps, options and ``u``; a run kept there is read,
    not run again (a stopped study resumes where it stopped)."""
    n, bandwidths = exp.num_samples, tuple(h * math.sqrt(dim) for h in exp.mmd_bandwidths)
    num_runs = len(exp.train_seeds) * exp.sample_seeds
    rng_exact, rng_sw, rng_sample = jax.random.split(rng, 3)
    exacts = [np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 100 + u), n))
              for u in range(num_runs)]
    rows, samples = [], {}
    for method in exp.methods:
        targets = exp.nfes + ((exp.reference_steps,) if method == REFERENCE
                              and exp.reference_steps else ())
        for column, nfe_target in enumerate(targets):
            num_steps, options = sampler_settings(method, nfe_target, column)
            fn = common.sampler_fn(sde, (n, dim), method, num_steps, options)
            sampler = sde_lib.SAMPLERS[method]
            flow = (dim in exp.flow_kl_dims and not sampler.adaptive
                    and sampler.deterministic(sampler.check_options(options)))
            kl_fn = (common.flow_kl_fn(sde, gmm, exp.flow_kl_points, dim, method, num_steps)
                     if flow else None)
            setting = f"{method}_{num_steps}_{json.dumps(options, sort_keys=True)}"
            for kind, fns in score_fns.items():
                row = {"dim": dim, "score": kind, "sampler": method, "nfe_target": nfe_target}
                runs, compiled = [], []
                try:
                    for u in range(num_runs):
                        i, r = divmod(u, exp.sample_seeds)
                        score_fn, key = fns[i % len(fns)], jax.random.fold_in(rng_sample, u)
                        one_run = functools.partial(
                            _sampler_run, compiled, fn, key, score_fn,
                            functools.partial(_metrics, gmm, exact=exacts[u], rng_sw=rng_sw,
                                              bandwidths=bandwidths),
                            kl_fn if r == 0 else None, u == 0 and dim == 2)
                        run, x = caches[kind][i % len(fns)].unit(
                            f"{setting}_u{u}", one_run, with_array=u == 0 and dim == 2)
                        runs.append(dict(run, group=i))
                        if x is not None:
                            samples[(kind, method, nfe_target)] = np.asarray(x)
                except ValueError:
                    runs = []  # the method rejects this setting: n/a
                progress.update(1)
                if runs:
                    compile_s = next((r["compile_s"] for r in runs if "compile_s" in r), 0.0)
                    row.update(nfe=runs[-1]["nfe"], compile_s=compile_s, **_summarize(runs))
                rows.append(row)
    # the Monte Carlo floor: sW2 between independent exact sets of the same size, 8 pairs (and
    # the MMD^2 of exact samples: zero in expectation)
    floor = [_metrics(gmm, np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 1), n)),
                      np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 2), n)),
                      rng_sw, bandwidths) | {"wall_s": 0.0, "group": i} for i in range(8)]
    reference = {"dim": dim, "score": "exact samples", "sampler": "-", "nfe_target": 0, "nfe": 0,
                 "compile_s": 0.0, **_summarize(floor)}
    # the limit of every deterministic sampler's KL with the exact score: KL(prior || p_T)
    kl, se = evaluation.flow_limit_kl(jax.random.fold_in(rng_exact, 99), sde,
                                      gmm.marginal(sde, sde.T).log_prob, 100_000, dim)
    reference.update(flow_limit=float(kl), flow_limit_se=float(se))
    return [reference] + rows, samples


def heldout_nll(rng, sde, gmm, score_fns, num, dim):
    """Probability-flow NLL of held-out data in bits/dim for each score kind (mean and sd over
    its scores), and the true NLL."""
    x = gmm.sample(jax.random.fold_in(rng, 7), num)
    out = {"true": float(-jnp.mean(gmm.log_prob(x)) / (dim * math.log(2)))}
    nll = jax.jit(lambda k, score_fn: sde_lib.log_likelihood(k, sde, score_fn, x,
                                                             divergence="exact"))
    for kind, fns in score_fns.items():
        values, nfes = [], []
        for score_fn in fns:
            logp, nfe = nll(rng, score_fn)
            values.append(float(-jnp.mean(logp) / (dim * math.log(2))))
            nfes.append(int(nfe))
        out[kind] = float(np.mean(values))
        out[f"{kind}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        out[f"{kind}_nfe"] = int(np.mean(nfes))
    return out


def gaussian_flow_limit(sde, exp, seed: int | None = None) -> float:
    """``KL(prior || p_T)`` in nats for the exact table's Gaussian of data seed ``seed`` (by
    default ``exp.seed``): the limit of every deterministic sampler's exact KL there
    (``sde_lib.evaluation.flow_limit_kl``; here in closed form)."""
    data = common.gaussian_testbed(exp, seed)
    alpha, sigma = sde.marginal_coeffs(jnp.asarray(sde.T, data.mean.dtype))
    prior = evaluation.GaussianLaw(jnp.zeros_like(data.mean),
                                   jnp.full_like(data.var, sde.prior_std**2))
    p_T = evaluation.GaussianLaw(alpha * data.mean, alpha**2 * data.var + sigma**2)
    return float(evaluation.gaussian_kl(prior, p_T))


def exact_gaussian_errors(sde, exp) -> list[dict]:
    """Exact sampler error with no Monte Carlo (``sde_lib.evaluation``): KL(sampler || data)
    in nats, its ratio to the flow limit ``KL(prior || p_T)`` and W2 for the Gaussian
    ``N(mu, diag(s^2))`` in ``exp.gaussian_dim`` dimensions, ``s^2`` log-spaced over
    ``exp.gaussian_var``, for every affine or deterministic sampler at every NFE target (and
    the reference); each the mean, sd and standard error over the ``exp.gaussian_seeds`` data
    means ``mu ~ N(0, I)`` (seeds ``exp.seed``, ``exp.seed + 1``, ...). The first row
    (``sampler = "flow limit"``) holds the limit itself."""
    seeds = range(exp.seed, exp.seed + exp.gaussian_seeds)
    datas = [common.gaussian_testbed(exp, s) for s in seeds]
    limits = [gaussian_flow_limit(sde, exp, s) for s in seeds]

    def cell(values, name):
        return claims.spread([{"group": g, name: v} for g, v in enumerate(values)], name)

    rows = [{"sampler": "flow limit", "nfe_target": 0, "nfe": 0, "seeds": len(limits),
             **cell(limits, "kl_nats")}]
    settings = []
    for method in exp.methods:
        sampler = sde_lib.SAMPLERS[method]
        if sampler.adaptive or not (sampler.affine
                                    or sampler.deterministic(sampler.check_options({}))):
            continue
        settings += [(method, n) for n in exp.nfes + ((exp.reference_steps,) if method ==
                                                      REFERENCE and exp.reference_steps else ())]
    for method, nfe_target in common.progress(settings, f"exact Gaussian table, "
                                              f"{len(datas)} data means"):
        sampler = sde_lib.SAMPLERS[method]
        num_steps = sampler.num_steps_for(nfe_target)
        row = {"sampler": method, "nfe_target": nfe_target}
        try:
            laws = [evaluation.gaussian_sampler_law(sde, d.mean, d.var, method, num_steps)
                    for d in datas]
        except ValueError:
            rows.append(row)
            continue
        kl = [float(evaluation.gaussian_kl(law, d)) for law, d in zip(laws, datas,
                                                                         strict=True)]
        row.update(nfe=sampler.nfe(num_steps, sampler.check_options({})), seeds=len(kl),
                   **cell(kl, "kl_nats"),
                   **cell([float(evaluation.gaussian_w2(law, d))
                           for law, d in zip(laws, datas, strict=True)], "w2"))
        if sampler.deterministic(sampler.check_options({})):
            row.update(cell([k / lim for k, lim in zip(kl, limits, strict=True)],
                            "limit_ratio"))
        rows.append(row)
    for row in rows:
        for key in [k for k in row if k.endswith("_within_sd")]:
            row.pop(key)
    return rows


# ----- reporting ---------------------------------------------------------------------------------

COLUMNS = ("dim", "score", "sampler", "nfe_target", "nfe", "runs", "groups",
           *(f"{m}{x}" for m in METRICS for x in ("", "_se", "_sd", "_within_sd")),
           "kl_runs", "kl", "kl_se", "kl_sd", "kl_run_se", "flow_limit", "flow_limit_se",
           "compile_s", "wall_s")
GAUSSIAN_COLUMNS = ("sampler", "nfe_target", "nfe", "seeds", "kl_nats", "kl_nats_se",
                    "kl_nats_sd", "limit_ratio", "limit_ratio_se", "w2", "w2_se")
NAMES = {"mmd2": "MMD^2 to the mixture", "sw2": "sliced W2 to exact samples",
         "kl": "KL(sampler || data) in nats"}


def write_results(workdir, rows, likelihood, gaussian):
    """``results.csv/md`` (one row per dimension, score, sampler and NFE target: each metric's
    mean over the groups with its standard error, the groups' sd and the sd within a group),
    ``likelihood.csv/md`` and ``gaussian.csv/md`` (the exact table)."""
    paths = common.write_table(workdir, "results", rows, COLUMNS)
    kinds = [k for k in likelihood[0] if k not in ("dim", "true")
             and not k.endswith(("_nfe", "_sd"))]
    lk_rows = [{"dim": d["dim"], "true NLL (bits/dim)": d["true"],
                **{f"{k} PF-ODE NLL (bits/dim)": common.pm(d[k], d[f"{k}_sd"]) for k in kinds},
                **{f"{k} NFE": d[f"{k}_nfe"] for k in kinds}} for d in likelihood]
    paths.update(common.write_table(workdir, "likelihood", lk_rows, list(lk_rows[0])))
    paths.update(common.write_table(workdir, "gaussian", gaussian, GAUSSIAN_COLUMNS))
    return paths


def load_tables(workdir) -> tuple[list[dict], list[dict]]:
    """``results.csv`` and ``gaussian.csv`` of a finished run read back as the rows the
    reports take (numbers as numbers, empty cells dropped): the claims, summary and figures of
    a committed run can be regenerated from its tables."""
    return (common.read_table(os.path.join(workdir, "results.csv")),
            common.read_table(os.path.join(workdir, "gaussian.csv")))


_finite = claims.comparable  # a finite mean with a standard error


_cell = common.rerun_cell  # mean +- the 95% re-run half-width


def reaching(points, target, target_se, nfes) -> str:
    """The first NFE target of ``points`` ``{nfe: (mean, se)}`` not resolved above
    ``target`` (``claims.first_reaching``); ``> max`` if none."""
    first = claims.first_reaching([(n, *points[n]) for n in nfes if n in points], target,
                                  target_se)
    return f"> {max(nfes)}" if first is None else str(first)


def _reference(rows, dim, score, ref_steps):
    target = [r for r in rows if r["dim"] == dim and r["score"] == score and r[
        "sampler"] == REFERENCE and r["nfe_target"] == ref_steps]
    return target[0] if target and target[0].get("nfe") is not None else None


def write_summary(workdir, rows, gaussian, exp):
    """``summary.md``: per dimension and score, the MMD^2 and the sliced W2 by sampler and NFE
    target, then the deterministic samplers' flow KL and the exact Gaussian table. Every cell
    is the mean over its groups (training seeds; for the exact score, as many groups of
    sampling seeds; data means for the Gaussian table) +- the half-width of the 95% interval a
    re-run with as many other seeds lands in (``claims.rerun_halfwidth``). "NFE to EM-<n>" is
    the first NFE target not resolved above Euler-Maruyama at ``reference_steps`` by the
    claims' rule, on that table's metric."""
    parts = []
    reach = f"NFE to EM-{exp.reference_steps}"
    groups = len(exp.train_seeds)
    within = (f"{groups} training seeds x {exp.sample_seeds} sampling seeds; the exact score "
              f"{groups} groups of {exp.sample_seeds} sampling seeds")
    bandwidths = ", ".join(f"{h:g}" for h in exp.mmd_bandwidths)
    for dim in exp.dims:
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for metric in ("mmd2", "sw2"):
            for score in ("model", "exact"):
                target = _reference(rows, dim, score, exp.reference_steps)
                table = []
                for method in exp.methods:
                    mine = {r["nfe_target"]: r for r in rows if r["dim"] == dim
                            and r["score"] == score and r["sampler"] == method}
                    row = {"sampler": method, **{str(n): _cell(mine[n], metric, groups)
                                                 if n in mine else "n/a" for n in exp.nfes}}
                    if target is not None and _finite(target, metric):
                        row[reach] = reaching(
                            {n: (r[metric], r[f"{metric}_se"]) for n, r in mine.items()
                             if _finite(r, metric)}, target[metric], target[f"{metric}_se"],
                            exp.nfes)
                    table.append(row)
                head = f"### d = {dim}, {score} score: {NAMES[metric]}"
                if metric == "mmd2":
                    head += (f" (Gaussian kernels at {bandwidths} x sqrt(d), the mixture's side "
                             f"exact: zero in expectation for exact samples; exact samples "
                             f"{common.pm(ref['mmd2'], ref['mmd2_sd'])})")
                else:
                    head += (f" (exact vs exact: {common.pm(ref['sw2'], ref['sw2_sd'])}, mean "
                             f"+- sd over 8 pairs)")
                head += f"; mean +- 95% re-run interval over {within}"
                if target is not None:
                    head += (f"; Euler-Maruyama at {exp.reference_steps} steps: "
                             f"{_cell(target, metric, groups)}")
                parts.append(head + "\n\n" + common.markdown_table(
                    table, ["sampler", *map(str, exp.nfes)] + ([reach] if target else [])))
    for dim in [d for d in exp.dims if d in exp.flow_kl_dims]:
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for score in ("model", "exact"):
            table = []
            for method in exp.methods:
                mine = {r["nfe_target"]: r for r in rows if r["dim"] == dim
                        and r["score"] == score and r["sampler"] == method
                        and r.get("kl") is not None}
                if mine:
                    table.append({"sampler": method, **{str(n): _cell(mine[n], "kl", groups)
                                                        if n in mine else "n/a"
                                                        for n in exp.nfes}})
            if table:
                head = (f"### d = {dim}, {score} score: {NAMES['kl']} of the deterministic "
                        f"samplers (change of variables, {exp.flow_kl_points} prior draws, the "
                        f"first sampling seed of each of {groups} groups), mean +- 95% re-run "
                        f"interval")
                if score == "exact":
                    head += (f". Their limit with the exact score, KL(prior || p_T) (the exact "
                             f"flow preserves KL): {ref['flow_limit']:.2g} +- "
                             f"{ref['flow_limit_se']:.1g}")
                parts.append(head + "\n\n" + common.markdown_table(
                    table, ["sampler", *map(str, exp.nfes)]))
    seeds = exp.gaussian_seeds
    limit = gaussian[0]
    target = [r for r in gaussian if r["sampler"] == REFERENCE
              and r["nfe_target"] == exp.reference_steps and r.get("kl_nats") is not None]
    target = target[0] if target else None
    near_limit = f"NFE to {LIMIT_FACTOR:g} x flow limit"
    table = []
    for method in dict.fromkeys(r["sampler"] for r in gaussian[1:]):
        mine = {r["nfe_target"]: r for r in gaussian if r["sampler"] == method
                and r.get("kl_nats") is not None}
        row = {"sampler": method, **{str(n): _cell(mine[n], "kl_nats", seeds) if n in mine
                                     else "n/a" for n in exp.nfes}}
        if target is not None:
            row[reach] = reaching({n: (r["kl_nats"], r["kl_nats_se"] or 0.0)
                                   for n, r in mine.items()}, target["kl_nats"],
                                  target["kl_nats_se"] or 0.0, exp.nfes)
        if any("limit_ratio" in r for r in mine.values()):
            row[near_limit] = reaching({n: (r["limit_ratio"], r["limit_ratio_se"] or 0.0)
                                        for n, r in mine.items()}, LIMIT_FACTOR, 0.0, exp.nfes)
        table.append(row)
    head = (f"### Exact sampler error: KL(sampler || data) in nats, Gaussian data in "
            f"d = {exp.gaussian_dim} with variances {exp.gaussian_var[0]:g} .. "
            f"{exp.gaussian_var[1]:g}, exact score, no Monte Carlo; mean +- 95% re-run interval "
            f"over {seeds} data means. The deterministic samplers' limit, KL(prior || p_T) "
            f"(the exact flow preserves KL): {_cell(limit, 'kl_nats', seeds)}")
    if target is not None:
        head += (f"; Euler-Maruyama at {exp.reference_steps} steps: "
                 f"{_cell(target, 'kl_nats', seeds)}")
    parts.append(head + "\n\n" + common.markdown_table(
        table, ["sampler", *map(str, exp.nfes)] + ([reach] if target is not None else [])
        + [near_limit]))
    return {"summary.md": reporting.write_atomic(os.path.join(workdir, "summary.md"),
                                                 "\n".join(parts))}


# ----- claims ------------------------------------------------------------------------------------

def _pairs(out, items, context, metric, name):
    """Every pair of ``items`` (``(label, row)``) compared on ``name``."""
    for (a, r), (b, q) in itertools.combinations(items, 2):
        out.append(claims.compare(context, metric, a, r[name], r[f"{name}_se"], b, q[name],
                                  q[f"{name}_se"]))


def _at_nfe(*rows) -> str:
    """``"<sampler> at NFE <target>"``; an adaptive sampler's target is a tolerance, so the NFE
    it measured follows (``"pf_ode_adaptive at NFE 10 (26 measured)"``, or ``(32 / 20
    measured)`` for two rows, model and exact score)."""
    r = rows[0]
    text = f"{r['sampler']} at NFE {r['nfe_target']}"
    if common.sampler_label(r) == r["sampler"]:
        return text
    measured = " / ".join(f"{float(q['nfe']):.0f}" for q in rows)
    return f"{text} ({measured} measured)"


_AT_NFE = re.compile(r"^(?P<method>.+) at NFE (?P<nfe>\d+)"
                     r"(?: \((?P<measured>[\d / ]+) measured\))?$")


def sampler_claims(rows, gaussian, exp) -> list[dict]:
    """Every comparison the tables support, by ``experiments.claims``' rule, each cell's
    standard error over its groups (training seeds; data means on the Gaussian):

    * ``MMD^2``, and ``flow KL`` for the deterministic samplers, between every two samplers at
      each dimension, score and NFE target (context ``d = 2, model score, NFE 10``);
    * each sampler at each NFE against Euler-Maruyama at ``reference_steps`` on ``MMD^2``
      (context ``d = 2, model score, reaching EM-1000``);
    * the model score against the exact one for each sampler and NFE on ``MMD^2`` and, for the
      deterministic samplers, ``flow KL`` (context ``d = 2, ddim at NFE 10``);
    * on the exact Gaussian, ``KL`` between every two samplers at each NFE target, and each
      deterministic sampler's ``KL / flow limit`` against ``LIMIT_FACTOR``."""
    out = []
    ref_name = f"EM-{exp.reference_steps}"
    for dim in exp.dims:
        for score in ("model", "exact"):
            mine = [r for r in rows if r["dim"] == dim and r["score"] == score]
            for n in exp.nfes:
                at = [(common.sampler_label(r), r) for r in mine if r["nfe_target"] == n]
                where = f"d = {dim}, {score} score, NFE {n}"
                _pairs(out, [(m, r) for m, r in at if _finite(r, "mmd2")], where, "MMD^2", "mmd2")
                _pairs(out, [(m, r) for m, r in at if _finite(r, "kl")], where, "flow KL", "kl")
            target = _reference(rows, dim, score, exp.reference_steps)
            if target is not None and _finite(target, "mmd2"):
                for r in mine:
                    if r["nfe_target"] in exp.nfes and _finite(r, "mmd2"):
                        out.append(claims.compare(
                            f"d = {dim}, {score} score, reaching {ref_name}", "MMD^2",
                            _at_nfe(r), r["mmd2"], r["mmd2_se"],
                            ref_name, target["mmd2"], target["mmd2_se"]))
        for r in rows:
            if r["dim"] != dim or r["score"] != "model":
                continue
            q = [e for e in rows if e["dim"] == dim and e["score"] == "exact" and e[
                "sampler"] == r["sampler"] and e["nfe_target"] == r["nfe_target"]]
            for name, metric in (("mmd2", "MMD^2"), ("kl", "flow KL")):
                if q and _finite(r, name) and _finite(q[0], name):
                    out.append(claims.compare(
                        f"d = {dim}, {_at_nfe(r, q[0])}", metric,
                        "model score", r[name], r[f"{name}_se"], "exact score", q[0][name],
                        q[0][f"{name}_se"]))
    where = f"Gaussian d = {exp.gaussian_dim}, exact score"
    for n in exp.nfes:
        _pairs(out, [(r["sampler"], r) for r in gaussian[1:] if r["nfe_target"] == n
                     and _finite(r, "kl_nats")], f"{where}, NFE {n}", "KL (nats)", "kl_nats")
    for r in gaussian[1:]:
        if r["nfe_target"] in exp.nfes and _finite(r, "limit_ratio"):
            out.append(claims.compare(
                f"{where}, reaching {LIMIT_FACTOR:g} x flow limit", "KL / flow limit",
                f"{r['sampler']} at NFE {r['nfe_target']}", r["limit_ratio"],
                r["limit_ratio_se"], f"{LIMIT_FACTOR:g}", LIMIT_FACTOR, 0.0))
    return out


# results/README.md quotes ``headline`` of the committed claims between these lines
README_MARKERS = claims.readme_markers("compare_samplers", "experiments.compare_samplers.headline")


def _reach_cell(method: str, found: tuple | None, last: int) -> str:
    """``"ddim 50"``, ``"pf_ode_adaptive 26 (the NFE-10 tolerance)"`` or ``"pc not by 100"``."""
    if found is None:
        return f"{method} not by {last}"
    nfe, measured = found
    return f"{method} {nfe}" if measured is None else (
        f"{method} {measured} (the NFE-{nfe} tolerance)")


def headline(rows_of_claims) -> str:
    """The statements the README quotes, generated from the claims alone (``claims.csv``'s rows,
    strings or numbers): for each pairwise context and metric, the sampler with the lowest
    mean, those not resolved from it and how many are resolved above it; for each "reaching"
    context, the first NFE at which each sampler is not resolved above the target; per
    dimension and metric, in how many (sampler, NFE) cells the model score is resolved above
    the exact one, the range of the two scores' means there, and the fewer of the cells
    resolved and not resolved."""
    pairwise, reach, scores = [], {}, {}
    for c in rows_of_claims:
        if ", reaching " in c["context"]:
            reach.setdefault((c["context"], c["metric"]), []).append(c)
        elif c["a"] == "model score":
            scores.setdefault((c["context"].split(", ")[0], c["metric"]), []).append(c)
        elif ", NFE " in c["context"]:
            pairwise.append(c)
    lines = claims.leaders(pairwise)
    for (context, metric), cs in reach.items():
        first: dict[str, int | None] = {}
        for c in cs:
            at = _AT_NFE.match(c["a"])
            method, nfe = at["method"], int(at["nfe"])
            first.setdefault(method, None)
            above = c["verdict"] == f"{c['a']} above {c['b']}"
            if not above and (first[method] is None or nfe < first[method][0]):
                first[method] = (nfe, at["measured"])
        target, last = cs[0]["b"], max(int(_AT_NFE.match(c["a"])["nfe"]) for c in cs)
        cells = ", ".join(_reach_cell(m, f, last) for m, f in first.items())
        lines.append(f"- {context}, {metric}: first NFE not resolved above {target}: {cells}.")
    for (dim, metric), cs in scores.items():
        above = [c for c in cs if c["verdict"] == "model score above exact score"]
        cells = {id(c): c["context"].split(", ", 1)[1] for c in cs}

        def span(key, cells=above):
            lo, hi = (f(float(c[key]) for c in cells) for f in (min, max))
            return f"{lo:.2g}" if f"{lo:.2g}" == f"{hi:.2g}" else f"{lo:.2g}-{hi:.2g}"
        text = (f"- {dim}, {metric}, model score against exact score: model above in "
                f"{len(above)} of {len(cs)} (sampler, NFE) cells")
        if above:
            text += f" (there model {span('mean_a')}, exact {span('mean_b')})"
        rest = [cells[id(c)] for c in cs if c not in above]
        if above and len(above) <= len(rest):
            text += f": {', '.join(cells[id(c)] for c in above)}"
        elif above and rest:
            text += f"; not resolved: {', '.join(rest)}"
        lines.append(text + ".")
    return "\n".join(lines) + "\n"


def write_claims(workdir, rows, gaussian, exp) -> dict[str, str]:
    """``claims.md``/``.csv`` (``sampler_claims``) and ``headline.md`` (``headline``)."""
    made = sampler_claims(rows, gaussian, exp)
    return claims.write_with_headline(workdir, made, headline(made))


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d")


def method_styles(methods) -> dict[str, dict]:
    """A distinct colour (tab10, then tab20's lighter shades) and marker per method, the same
    in every panel."""
    import matplotlib

    tab10, tab20 = matplotlib.colormaps["tab10"], matplotlib.colormaps["tab20"]
    colors = [tab10(i) for i in range(10)] + [tab20(2 * i + 1) for i in range(10)]
    return {m: {"color": colors[k % len(colors)], "marker": MARKERS[k % len(MARKERS)]}
            for k, m in enumerate(dict.fromkeys(methods))}


def quality_figure(rows, gaussian, exp, metric: str = "mmd2"):
    """``quality_vs_nfe.png`` (a matplotlib ``Figure``): ``metric`` (``mmd2`` or ``sw2``)
    against NFE, mean with a +-1 standard error band over the groups, one panel per dimension
    and score, and the exact Gaussian KL; one legend for the figure, in the free panel's place.
    The MMD^2 is unbiased and can be negative: its axis is linear near 0 (up to the power of
    ten at or above the exact samples' sd) and logarithmic beyond."""
    plt = reporting.pyplot()
    scores = ("model", "exact")
    fig, axes = plt.subplots(len(exp.dims) + 1, len(scores), squeeze=False,
                             figsize=(5.2 * len(scores), 3.6 * (len(exp.dims) + 1)))
    styles = method_styles([*exp.methods, *(r["sampler"] for r in gaussian[1:])])
    for i, dim in enumerate(exp.dims):
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for j, score in enumerate(scores):
            ax = axes[i, j]
            for method in exp.methods:
                pts = sorted((r["nfe"], r[metric], r.get(f"{metric}_se") or 0.0) for r in rows
                             if r["dim"] == dim and r["score"] == score and r["sampler"] == method
                             and r.get("nfe") is not None and math.isfinite(r[metric]))
                if pts:
                    nfe, mean, se = map(np.array, zip(*pts, strict=True))
                    ax.plot(nfe, mean, ms=4, label=method, **styles[method])
                    low = mean - se if metric == "mmd2" else np.maximum(mean - se, 1e-3)
                    ax.fill_between(nfe, low, mean + se, alpha=0.1, color=styles[method]["color"])
            sd = ref.get(f"{metric}_sd") or 0.0
            ax.axhspan(ref[metric] - sd, ref[metric] + sd, color="k", alpha=0.1,
                       label="exact samples (+-1 sd)")
            if metric == "mmd2":
                # linear up to the power of ten at or above the exact samples' sd
                ax.set_yscale("symlog", linthresh=10.0 ** math.ceil(math.log10(max(sd, 1e-8))),
                              linscale=0.5)
                ax.axhline(0.0, color="k", lw=0.5)
            else:
                ax.set_yscale("log")
            ax.set(xscale="log", title=f"d = {dim}, {score} score",
                   xlabel="NFE (score evaluations)", ylabel=NAMES[metric])
    ax = axes[-1, 0]
    for method in dict.fromkeys(r["sampler"] for r in gaussian[1:]):
        pts = sorted((r["nfe"], r["kl_nats"]) for r in gaussian[1:]
                     if r["sampler"] == method and r.get("kl_nats") is not None)
        if pts:
            ax.loglog(*zip(*pts, strict=True), ms=4, label=method, **styles[method])
    ax.axhline(gaussian[0]["kl_nats"], color="k", ls="--", lw=0.8,
               label="deterministic samplers' limit KL(prior || p_T)")
    ax.set(title=f"exact error, Gaussian d = {exp.gaussian_dim}\n(exact score, no Monte Carlo, "
                 f"mean over {exp.gaussian_seeds} data means)",
           xlabel="NFE (score evaluations)", ylabel="KL(sampler || data), nats")
    for ax in axes.ravel():
        reporting.plain_log_ticks(ax)
        ax.grid(alpha=0.3, which="major")
    legend = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    for a in axes[-1, 1:]:  # the free places of the last row hold the legend
        fig.delaxes(a)
    fig.suptitle(f"sample quality against the number of score evaluations (bands: +-1 standard "
                 f"error over {len(exp.train_seeds)} training seeds)")
    fig.tight_layout()
    right, bottom = axes[0, -1].get_position(), axes[-1, 0].get_position()
    fig.legend(legend.values(), legend.keys(), loc="center", fontsize=8, ncol=2,
               bbox_to_anchor=(right.x0, bottom.y0, right.x1 - right.x0, bottom.height))
    return fig


def samples_figure(samples, gmm_2d, exp, score: str = "model"):
    """``samples_2d.png`` (a matplotlib ``Figure``): ``score``'s samples of each method at the
    middle NFE target over the true density's contours; unused panels removed."""
    plt = reporting.pyplot()
    nfe = exp.nfes[len(exp.nfes) // 2]
    cols = math.ceil(len(exp.methods) / 2)
    fig, axes = plt.subplots(2, cols, squeeze=False, figsize=(3.2 * cols, 6.8),
                             sharex=True, sharey=True)
    lim = 1.2 * float(np.abs(np.asarray(gmm_2d.means)).max()) + 3.5
    g = np.linspace(-lim, lim, 120)
    xx, yy = np.meshgrid(g, g)
    dens = np.exp(np.asarray(gmm_2d.log_prob(jnp.asarray(np.stack([xx.ravel(), yy.ravel()],
                                                                      1)))).reshape(xx.shape))
    for ax, method in zip(axes.ravel(), exp.methods, strict=False):
        ax.contour(xx, yy, dens, levels=6, colors="k", linewidths=0.6)
        x = samples.get((score, method, nfe))
        if x is not None:
            ax.scatter(x[:1000, 0], x[:1000, 1], s=1, alpha=0.4)
        ax.set(title=f"{method}", xlim=(-lim, lim), ylim=(-lim, lim), xlabel="x_1",
               ylabel="x_2")
        ax.tick_params(labelbottom=True, labelleft=True)
    for ax in axes.ravel()[len(exp.methods):]:
        fig.delaxes(ax)
    fig.suptitle(f"d = 2, {score} score (training seed {exp.train_seeds[0]}), NFE target "
                 f"{nfe}; contours: the true density")
    fig.tight_layout()
    return fig


def write_figures(workdir, rows, gaussian, samples, gmm_2d, exp):
    """Writes ``quality_vs_nfe.png`` (``quality_figure``: the MMD^2), ``sw2_vs_nfe.png`` (the
    sliced W2) and, with 2-D data, ``samples_2d.png`` (``samples_figure``); returns their paths
    by name."""
    paths = reporting.save_figure(quality_figure(rows, gaussian, exp), workdir,
                                  "quality_vs_nfe.png")
    paths.update(reporting.save_figure(quality_figure(rows, gaussian, exp, "sw2"), workdir,
                                       "sw2_vs_nfe.png"))
    if gmm_2d is not None:
        paths.update(reporting.save_figure(samples_figure(samples, gmm_2d, exp), workdir,
                                           "samples_2d.png"))
    return paths


# ----- the job ----------------------------------------------------------------------------------

# left out of the fingerprint of the kept runs: they choose which runs are made, not what one
# gives (a run's settings and its index u are in its key)
_CHOOSERS = ("dims", "methods", "nfes", "train_seeds", "num_heldout", "gaussian_dim",
             "gaussian_var", "gaussian_seeds", "reference_steps")


def compare_samplers(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model per dimension and training seed, runs the comparison;
    returns the paths of the files written. Each finished sampler run is kept in
    ``<workdir>/partial`` (``common.ResultCache``), so a stopped study resumes where it stopped
    and adding training seeds, samplers or NFEs reuses the runs already made."""
    exp = trainer.experiment_config(ComparisonConfig, config)
    configs = {(dim, seed): base.override(config, {"data.dim": dim, "training.seed": seed})
               for dim in exp.dims for seed in exp.train_seeds}
    for c in configs.values():  # every model checked before anything trains
        trainer.validate_config(c)
    rng = jax.random.key(exp.seed)
    # each finished sampler run is kept in <workdir>/partial, one directory per model (and one
    # for the exact score) and per setting of what a run depends on
    fingerprint = {"config": common.config_fingerprint(config, _CHOOSERS)}
    rows, likelihood, samples_2d, gmm_2d = [], [], {}, None
    for dim in exp.dims:
        models = [trainer.train_and_evaluate(configs[(dim, seed)],
                                             os.path.join(workdir, f"model_d{dim}_s{seed}"))
                  for seed in exp.train_seeds]
        sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
        score_fns = {"model": [m["score_fn"] for m in models],
                     "exact": [jax.tree_util.Partial(gmm.score_fn(sde))]}
        caches = {"model": [common.ResultCache(workdir, {**fingerprint, "dim": dim,
                                                         "train_seed": seed,
                                                         "step": int(m["state"].step)})
                            for seed, m in zip(exp.train_seeds, models, strict=True)],
                  "exact": [common.ResultCache(workdir, {**fingerprint, "dim": dim,
                                                         "score": "exact"})]}
        key_eval = jax.random.fold_in(rng, dim)
        with tqdm(total=2 * (len(exp.methods) * len(exp.nfes)
                             + (REFERENCE in exp.methods and exp.reference_steps > 0)),
                  desc=f"sampler runs d={dim}",
                  unit="setting") as progress:
            dim_rows, samples = evaluate_runs(key_eval, sde, gmm, score_fns, exp, progress, dim,
                                              caches)
        rows += dim_rows
        likelihood.append({"dim": dim, **heldout_nll(key_eval, sde, gmm, score_fns,
                                                     exp.num_heldout, dim)})
        if dim == 2:
            samples_2d, gmm_2d = samples, gmm
    gaussian = exact_gaussian_errors(sde, exp)
    paths = write_results(workdir, rows, likelihood, gaussian)
    paths.update(write_summary(workdir, rows, gaussian, exp))
    paths.update(write_claims(workdir, rows, gaussian, exp))
    paths.update(write_figures(workdir, rows, gaussian, samples_2d, gmm_2d, exp))
    return paths


def rerun_check(committed: str, rerun: str) -> dict[str, tuple[int, int]]:
    """How many cells of the run in ``committed`` (a workdir or ``results/compare_samplers``) a
    re-run in ``rerun`` (other training and sampling seeds, the same grid) lands inside, per
    metric: ``{metric: (inside, cells)}`` (``claims.rerun_coverage``), the exact table's
    metrics prefixed ``gaussian:``."""
    rows, gaussian = load_tables(committed)
    rows2, gaussian2 = load_tables(rerun)
    rows = [r for r in rows if r["score"] != "exact samples"]
    out = {m: claims.rerun_coverage(rows, rows2, ("dim", "score", "sampler", "nfe_target"),
                                    (m,), "groups") for m in (*METRICS, "kl")}
    out.update({f"gaussian:{m}": claims.rerun_coverage(gaussian, gaussian2,
                                                       ("sampler", "nfe_target"), (m,), "seeds")
                for m in ("kl_nats", "w2", "limit_ratio")})
    return out


def rewrite_reports(config, workdir: str) -> dict[str, str]:
    """The summary, claims and table figures (not ``samples_2d.png``, which needs the samples)
    of a finished run, written again from its ``results.csv`` and ``gaussian.csv``
    (``load_tables``) by the current code; returns their paths."""
    exp = trainer.experiment_config(ComparisonConfig, config)
    rows, gaussian = load_tables(workdir)
    paths = write_summary(workdir, rows, gaussian, exp)
    paths.update(write_claims(workdir, rows, gaussian, exp))
    paths.update(write_figures(workdir, rows, gaussian, {}, None, exp))
    return paths


run = compare_samplers


def main(argv=None):
    cli.run_main(compare_samplers, common.config_file("compare_samplers"), argv,
                 settings=ComparisonConfig)


if __name__ == "__main__":
    main()
