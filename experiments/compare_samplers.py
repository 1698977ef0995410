r"""The main job: reverse-SDE vs DDPM sampling (and every other sampler) on Gaussian-mixture data.

For each dimension ``d`` (default 2 and 16), the seeds' mixture of two identical Gaussians with
random shifts is the data. One score model per training seed ``s`` is trained on it
(``trainer.train_and_evaluate``, the config ``experiments/configs/compare_samplers.py`` with
``data.dim = d`` and ``training.seed = s``, in ``<workdir>/model_d<d>_s<s>``; a second run in the
same workdir reuses them), then every sampler runs at every NFE target with each model and with
the oracle's exact score, each with ``sample_seeds`` sampling seeds (the same prior draw and
noise for every sampler and score; its own set of exact samples to compare with), so sampler
error (exact rows) and model error (the difference) are separated. Each run is measured against
the exact mixture, and every row reports the mean and sd over its runs:

* ``sw2``: sliced 2-Wasserstein distance to as many exact samples (``experiments/common.py``); the
  ``exact samples`` row is its Monte Carlo floor, mean and sd over 8 pairs of independent exact
  sets;
* ``kl`` (deterministic samplers in ``flow_kl_dims``): KL(sampler || data) in nats by the change
  of variables along the sampler's discrete map (``sde_lib.evaluation.flow_log_density``), with
  each run's standard error ``kl_se``, over the first sampling seed of each score (``kl_runs``);
  the ``exact samples`` row holds the limit every deterministic sampler's KL tends to with the
  exact score, ``flow_limit = KL(prior || p_T)`` (``sde_lib.evaluation.flow_limit_kl``, in
  every dimension);
* ``nll``: mean true negative log-density of the samples, nats/dim (exact samples: the entropy);
* ``mode_err``: largest error of the mode weights (fraction per component minus its weight);
* ``wall_s``: wall time of the compiled sampler (compile time separately, ``compile_s``).

Per dimension, the probability-flow NLL of held-out data in bits/dim (exact divergence) for the
exact score and each model; and, with no Monte Carlo at all, the exact KL of every affine sampler
on a Gaussian with unequal variances (``sde_lib.evaluation.gaussian_sampler_law``). Writes
``results.csv/md``, ``summary.md`` (the tables by sampler and NFE), ``likelihood.csv/md``,
``gaussian.csv/md``, ``quality_vs_nfe.png`` and ``samples_2d.png`` into the workdir and prints the
tables and the paths.

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
import trainer
from experiments import common
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
      dims: data dimensions (one trained model each).
      methods: sampler names (``sde_lib.SAMPLERS``).
      nfes: NFE targets; a sampler takes ``Sampler.num_steps_for(nfe)`` steps.
      num_samples: samples per run (and exact samples to compare with).
      num_heldout: held-out points for the probability-flow NLL.
      train_seeds: ``training.seed`` of each trained model (one per seed and dimension).
      sample_seeds: sampling seeds per score (each with its own exact reference set).
      gaussian_dim, gaussian_var: the Gaussian of the exact (Monte-Carlo-free) table: its
        dimension and the range of its log-spaced variances.
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
    gaussian_dim: int
    gaussian_var: tuple[float, float]
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
        if len(self.gaussian_var) != 2 or not 0 < self.gaussian_var[0] <= self.gaussian_var[1]:
            raise ValueError(f"gaussian_var must be (lo, hi) with 0 < lo <= hi, got "
                             f"{self.gaussian_var!r}")
        for name in ("num_samples", "num_heldout", "sample_seeds", "gaussian_dim",
                     "flow_kl_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
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


def _metrics(gmm, x, exact, rng_sw) -> dict:
    if not np.all(np.isfinite(x)):
        return {"sw2": math.inf, "nll": math.inf, "mode_err": math.inf}
    return {"sw2": common.sliced_wasserstein(x, exact, rng_sw),
            "nll": common.mean_nll(gmm, x),
            "mode_err": float(np.max(np.abs(common.mode_weights(gmm, x)
                                            - np.asarray(gmm.weights))))}


def _summarize(runs: list[dict]) -> dict:
    """Mean and sd (over the runs) of each metric; the wall time and the KL's standard error
    as means only. The flow KL is over the runs that have it (``kl_runs`` of them)."""
    out = common.summarize(runs, ("sw2", "nll", "mode_err", "wall_s"))
    flow = [r for r in runs if "kl" in r]
    if flow:
        out.update(common.summarize(flow, ("kl", "kl_se")), kl_runs=len(flow))
    for name in ("wall_s_sd", "kl_se_sd"):
        out.pop(name, None)
    return {**out, "runs": len(runs)}


def evaluate_runs(rng, sde, gmm, score_fns, exp, progress, dim):
    """One row per (score, method, NFE target) for data ``gmm`` in dimension ``dim``: each
    metric's mean and sd over every score of that kind (``score_fns[kind]`` is a list, one per
    training seed) times ``exp.sample_seeds`` sampling seeds. Sampling seed ``r`` uses the same
    prior draw and noise for every sampler and score, and its own set of exact samples."""
    n = exp.num_samples
    rng_exact, rng_sw, rng_sample = jax.random.split(rng, 3)
    exacts = [np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 100 + r), n))
              for r in range(exp.sample_seeds)]
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
            for kind, fns in score_fns.items():
                row = {"dim": dim, "score": kind, "sampler": method, "nfe_target": nfe_target}
                runs, compile_s = [], 0.0
                try:
                    for i, score_fn in enumerate(fns):
                        for r in range(exp.sample_seeds):
                            key = jax.random.fold_in(rng_sample, r)
                            if not runs:  # compiled once per score kind
                                start = time.perf_counter()
                                compiled = fn.lower(key, score_fn).compile()
                                compile_s = time.perf_counter() - start
                            start = time.perf_counter()
                            x, nfe = jax.block_until_ready(compiled(key, score_fn))
                            wall_s = time.perf_counter() - start
                            x = np.asarray(x)
                            run = {**_metrics(gmm, x, exacts[r], rng_sw), "wall_s": wall_s}
                            if kl_fn is not None and r == 0:  # one per score: its own SE
                                kl, kl_se = kl_fn(key, score_fn)
                                run.update(kl=float(kl), kl_se=float(kl_se))
                            runs.append(run)
                            if i == 0 and r == 0:
                                samples[(kind, method, nfe_target)] = x
                except ValueError:
                    runs = []  # the method rejects this setting: n/a
                progress.update(1)
                if runs:
                    row.update(nfe=int(nfe), compile_s=compile_s,
                               **_summarize(runs))
                rows.append(row)
    # the Monte Carlo floor: SW2 between independent exact sets of the same size, 8 pairs
    floor = [_metrics(gmm, np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 1), n)),
                      np.asarray(gmm.sample(jax.random.fold_in(rng_exact, 2 * i + 2), n)),
                      rng_sw) | {"wall_s": 0.0} for i in range(8)]
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


def gaussian_flow_limit(sde, exp) -> float:
    """``KL(prior || p_T)`` in nats for the exact table's Gaussian: the limit of every
    deterministic sampler's exact KL there (``sde_lib.evaluation.flow_limit_kl``; here in
    closed form)."""
    data = common.gaussian_testbed(exp)
    alpha, sigma = sde.marginal_coeffs(jnp.asarray(sde.T, data.mean.dtype))
    prior = evaluation.GaussianLaw(jnp.zeros_like(data.mean),
                                   jnp.full_like(data.var, sde.prior_std**2))
    p_T = evaluation.GaussianLaw(alpha * data.mean, alpha**2 * data.var + sigma**2)
    return float(evaluation.gaussian_kl(prior, p_T))


def exact_gaussian_errors(sde, exp) -> list[dict]:
    """Exact sampler error with no Monte Carlo (``sde_lib.evaluation``): KL(sampler || data)
    and W2 for the Gaussian ``N(mu, diag(s^2))`` in ``exp.gaussian_dim`` dimensions, ``s^2``
    log-spaced over ``exp.gaussian_var`` and ``mu ~ N(0, I)`` (seed ``exp.seed``), for every
    affine or deterministic sampler at every NFE target (and the reference)."""
    data = common.gaussian_testbed(exp)
    rows = []
    for method in exp.methods:
        sampler = sde_lib.SAMPLERS[method]
        if sampler.adaptive or not (sampler.affine
                                    or sampler.deterministic(sampler.check_options({}))):
            continue
        targets = exp.nfes + ((exp.reference_steps,) if method == REFERENCE
                              and exp.reference_steps else ())
        for nfe_target in targets:
            num_steps = sampler.num_steps_for(nfe_target)
            row = {"sampler": method, "nfe_target": nfe_target}
            try:
                law = evaluation.gaussian_sampler_law(sde, data.mean, data.var, method,
                                                      num_steps)
            except ValueError:
                rows.append(row)
                continue
            rows.append({**row, "nfe": sampler.nfe(num_steps, sampler.check_options({})),
                         "kl_nats": float(evaluation.gaussian_kl(law, data)),
                         "w2": float(evaluation.gaussian_w2(law, data))})
    return rows


# ----- reporting ---------------------------------------------------------------------------------

COLUMNS = ("dim", "score", "sampler", "nfe_target", "nfe", "runs", "sw2", "sw2_sd", "kl_runs",
           "kl", "kl_sd", "kl_se", "flow_limit", "flow_limit_se", "nll", "nll_sd", "mode_err",
           "mode_err_sd", "compile_s", "wall_s")
GAUSSIAN_COLUMNS = ("sampler", "nfe_target", "nfe", "kl_nats", "w2")


def write_results(workdir, rows, likelihood, gaussian):
    """``results.csv/md`` (one row per dimension, score, sampler and NFE target: mean and sd
    over the runs), ``likelihood.csv/md`` and ``gaussian.csv/md`` (the exact table)."""
    paths = common.write_table(workdir, "results", rows, COLUMNS)
    kinds = [k for k in likelihood[0] if k not in ("dim", "true")
             and not k.endswith(("_nfe", "_sd"))]
    lk_rows = [{"dim": d["dim"], "true NLL (bits/dim)": d["true"],
                **{f"{k} PF-ODE NLL (bits/dim)": common.pm(d[k], d[f"{k}_sd"]) for k in kinds},
                **{f"{k} NFE": d[f"{k}_nfe"] for k in kinds}} for d in likelihood]
    paths.update(common.write_table(workdir, "likelihood", lk_rows, list(lk_rows[0])))
    paths.update(common.write_table(workdir, "gaussian", gaussian, GAUSSIAN_COLUMNS))
    return paths


def first_nfe_within(values: dict, target: float, nfes) -> str:
    """The smallest NFE target whose value (a mean) is at most ``target``; ``> max`` if none."""
    for n in nfes:
        if values.get(n) is not None and values[n] <= target:
            return str(n)
    return f"> {max(nfes)}"


def write_summary(workdir, rows, gaussian, flow_limit, exp):
    """``summary.md``: sliced W2 (mean +- sd over the runs) per sampler and NFE target, one table
    per dimension and score, with the exact-vs-exact floor and the NFE at which each sampler
    reaches Euler-Maruyama at ``reference_steps`` (its mean within the reference's mean + sd);
    the deterministic samplers' flow KL (with the exact score's limit ``KL(prior || p_T)``);
    then the exact Gaussian KL table (reaching the reference's exact KL, and for the
    deterministic samplers ``LIMIT_FACTOR`` times their limit ``flow_limit``)."""
    parts = []
    reach = f"NFE to EM-{exp.reference_steps}"
    for dim in exp.dims:
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for score in ("model", "exact"):
            table = []
            target = [r for r in rows if r["dim"] == dim and r["score"] == score and r[
                "sampler"] == REFERENCE and r["nfe_target"] == exp.reference_steps]
            target = target[0] if target and target[0].get("sw2") is not None else None
            for method in exp.methods:
                mine = [r for r in rows if r["dim"] == dim and r["score"] == score
                        and r["sampler"] == method]
                cells = {r["nfe_target"]: common.pm(r.get("sw2"), r.get("sw2_sd")) for r in mine}
                runs = max([r.get("runs") or 0 for r in rows if r["dim"] == dim and
                            r["score"] == score], default=0)
                row = {"sampler": method, **{str(n): cells.get(n) for n in exp.nfes}}
                if target is not None:
                    row[reach] = first_nfe_within(
                        {r["nfe_target"]: r.get("sw2") for r in mine},
                        target["sw2"] + (target.get("sw2_sd") or 0.0), exp.nfes)
                table.append(row)
            head = (f"### d = {dim}, {score} score: sliced W2 by NFE target, mean +- sd over "
                    f"{runs} runs (exact vs exact: {ref['sw2']:.3f} +- {ref['sw2_sd']:.3f} over "
                    f"8 pairs")
            if target is not None:
                head += (f"; Euler-Maruyama at {exp.reference_steps} steps: "
                         f"{common.pm(target['sw2'], target.get('sw2_sd'))}")
            if score == "exact":
                head += (f"; the deterministic samplers' limit KL(prior || p_T) = "
                         f"{ref['flow_limit']:.2g} +- {ref['flow_limit_se']:.1g} nats")
            parts.append(head + ")\n\n" + common.markdown_table(
                table, ["sampler", *map(str, exp.nfes)] + ([reach] if target else [])))
    for dim in exp.flow_kl_dims:
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for score in ("model", "exact"):
            table, runs = [], 0
            for method in exp.methods:
                cells = {r["nfe_target"]: common.pm(r["kl"], r["kl_sd"] if r["kl_runs"] > 1
                                                    else r["kl_se"]) for r in rows
                         if r["dim"] == dim and r["score"] == score and r["sampler"] == method
                         and r.get("kl") is not None}
                runs = max([runs] + [r["kl_runs"] for r in rows if r["dim"] == dim and
                                     r["score"] == score and r.get("kl") is not None])
                if cells:
                    table.append({"sampler": method,
                                  **{str(n): cells.get(n) for n in exp.nfes}})
            if table:
                se = max(r["kl_se"] for r in rows if r["dim"] == dim and r["score"] == score
                         and r.get("kl") is not None)
                spread = (f"mean +- sd over {runs} runs (each run's standard error <= "
                          f"{se:.2g})" if runs > 1 else "+- its standard error")
                head = (f"### d = {dim}, {score} score: KL(sampler || data) in nats of the "
                        f"deterministic samplers (change of variables, {exp.flow_kl_points} "
                        f"prior draws per run), {spread}")
                if score == "exact" and "flow_limit" in ref:
                    head += (f". Their limit with the exact score, KL(prior || p_T) (the exact "
                             f"flow preserves KL): {ref['flow_limit']:.2g} +- "
                             f"{ref['flow_limit_se']:.1g}")
                parts.append(head + "\n\n" + common.markdown_table(
                    table, ["sampler", *map(str, exp.nfes)]))
    table = []
    target = [r.get("kl_nats") for r in gaussian if r["sampler"] == REFERENCE
              and r["nfe_target"] == exp.reference_steps]
    target = target[0] if target else None
    near_limit = f"NFE to {LIMIT_FACTOR:g} x flow limit"
    for method in dict.fromkeys(r["sampler"] for r in gaussian):
        values = {r["nfe_target"]: r.get("kl_nats") for r in gaussian if r["sampler"] == method}
        row = {"sampler": method, **{str(n): values.get(n) for n in exp.nfes}}
        if target is not None:
            row[reach] = first_nfe_within(values, target, exp.nfes)
        sampler = sde_lib.SAMPLERS[method]
        if sampler.deterministic(sampler.check_options({})):
            row[near_limit] = first_nfe_within(values, LIMIT_FACTOR * flow_limit, exp.nfes)
        table.append(row)
    head = (f"### Exact sampler error: KL(sampler || data) in nats, Gaussian data in "
            f"d = {exp.gaussian_dim} with variances {exp.gaussian_var[0]:g} .. "
            f"{exp.gaussian_var[1]:g}, exact score, no Monte Carlo. The deterministic "
            f"samplers' limit, KL(prior || p_T) (the exact flow preserves KL): "
            f"{flow_limit:.3g}")
    if target is not None:
        head += f"; Euler-Maruyama at {exp.reference_steps} steps: {target:.3g}"
    parts.append(head + "\n\n" + common.markdown_table(
        table, ["sampler", *map(str, exp.nfes)] + ([reach] if target is not None else [])
        + [near_limit]))
    return {"summary.md": reporting.write_atomic(os.path.join(workdir, "summary.md"),
                                                 "\n".join(parts))}


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d")


def method_styles(methods) -> dict[str, dict]:
    """A distinct colour (tab10, then tab20's lighter shades) and marker per method, the same
    in every panel."""
    import matplotlib

    tab10, tab20 = matplotlib.colormaps["tab10"], matplotlib.colormaps["tab20"]
    colors = [tab10(i) for i in range(10)] + [tab20(2 * i + 1) for i in range(10)]
    return {m: {"color": colors[k % len(colors)], "marker": MARKERS[k % len(MARKERS)]}
            for k, m in enumerate(dict.fromkeys(methods))}


def quality_figure(rows, gaussian, flow_limit, exp):
    """``quality_vs_nfe.png`` (a matplotlib ``Figure``): sliced W2 against NFE, mean with a +-1 sd
    band over the runs, one panel per dimension and score, and the exact Gaussian KL; one legend
    for the figure, in the free panel's place."""
    plt = reporting.pyplot()
    scores = ("model", "exact")
    fig, axes = plt.subplots(len(exp.dims) + 1, len(scores), squeeze=False,
                             figsize=(5.2 * len(scores), 3.6 * (len(exp.dims) + 1)))
    styles = method_styles([*exp.methods, *(r["sampler"] for r in gaussian)])
    for i, dim in enumerate(exp.dims):
        ref = [r for r in rows if r["dim"] == dim and r["score"] == "exact samples"][0]
        for j, score in enumerate(scores):
            ax = axes[i, j]
            for method in exp.methods:
                pts = sorted((r["nfe"], r["sw2"], r.get("sw2_sd") or 0.0) for r in rows
                             if r["dim"] == dim and r["score"] == score and
                             r["sampler"] == method and "nfe" in r and math.isfinite(r["sw2"]))
                if pts:
                    nfe, mean, sd = map(np.array, zip(*pts, strict=True))
                    ax.plot(nfe, mean, ms=4, label=method, **styles[method])
                    ax.fill_between(nfe, np.maximum(mean - sd, 1e-3), mean + sd, alpha=0.1,
                                    color=styles[method]["color"])
            ax.axhspan(ref["sw2"] - ref["sw2_sd"], ref["sw2"] + ref["sw2_sd"], color="k",
                       alpha=0.1, label="exact vs exact (+-1 sd)")
            ax.set(xscale="log", yscale="log", title=f"d = {dim}, {score} score",
                   xlabel="NFE (score evaluations)", ylabel="sliced W2 to exact samples")
    ax = axes[-1, 0]
    for method in dict.fromkeys(r["sampler"] for r in gaussian):
        pts = sorted((r["nfe"], r["kl_nats"]) for r in gaussian
                     if r["sampler"] == method and "kl_nats" in r)
        if pts:
            ax.loglog(*zip(*pts, strict=True), ms=4, label=method, **styles[method])
    ax.axhline(flow_limit, color="k", ls="--", lw=0.8,
               label="deterministic samplers' limit KL(prior || p_T)")
    ax.set(title=f"exact error, Gaussian d = {exp.gaussian_dim}\n(exact score, no Monte Carlo)",
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
    fig.suptitle("sample quality against the number of score evaluations")
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


def write_figures(workdir, rows, gaussian, flow_limit, samples, gmm_2d, exp):
    """Writes ``quality_vs_nfe.png`` (``quality_figure``) and, with 2-D data,
    ``samples_2d.png`` (``samples_figure``); returns their paths by name."""
    paths = reporting.save_figure(quality_figure(rows, gaussian, flow_limit, exp), workdir,
                                  "quality_vs_nfe.png")
    if gmm_2d is not None:
        paths.update(reporting.save_figure(samples_figure(samples, gmm_2d, exp), workdir,
                                           "samples_2d.png"))
    return paths


# ----- the job ----------------------------------------------------------------------------------

def compare_samplers(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model per dimension and training seed, runs the comparison;
    returns the paths of the files written."""
    exp = trainer.experiment_config(ComparisonConfig, config)
    configs = {(dim, seed): base.override(config, {"data.dim": dim, "training.seed": seed})
               for dim in exp.dims for seed in exp.train_seeds}
    for c in configs.values():  # every model checked before anything trains
        trainer.validate_config(c)
    rng = jax.random.key(exp.seed)
    rows, likelihood, samples_2d, gmm_2d = [], [], {}, None
    for dim in exp.dims:
        models = [trainer.train_and_evaluate(configs[(dim, seed)],
                                             os.path.join(workdir, f"model_d{dim}_s{seed}"))
                  for seed in exp.train_seeds]
        sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
        score_fns = {"model": [m["score_fn"] for m in models],
                     "exact": [jax.tree_util.Partial(gmm.score_fn(sde))]}
        key_eval = jax.random.fold_in(rng, dim)
        with tqdm(total=2 * (len(exp.methods) * len(exp.nfes)
                             + (REFERENCE in exp.methods and exp.reference_steps > 0)),
                  desc=f"sampler runs d={dim}",
                  unit="setting") as progress:
            dim_rows, samples = evaluate_runs(key_eval, sde, gmm, score_fns, exp, progress, dim)
        rows += dim_rows
        likelihood.append({"dim": dim, **heldout_nll(key_eval, sde, gmm, score_fns,
                                                     exp.num_heldout, dim)})
        if dim == 2:
            samples_2d, gmm_2d = samples, gmm
    gaussian = exact_gaussian_errors(sde, exp)
    paths = write_results(workdir, rows, likelihood, gaussian)
    flow_limit = gaussian_flow_limit(sde, exp)
    paths.update(write_summary(workdir, rows, gaussian, flow_limit, exp))
    paths.update(write_figures(workdir, rows, gaussian, flow_limit, samples_2d, gmm_2d, exp))
    return paths


run = compare_samplers


def main(argv=None):
    cli.run_main(compare_samplers, common.config_file("compare_samplers"), argv,
                 settings=ComparisonConfig)


if __name__ == "__main__":
    main()
