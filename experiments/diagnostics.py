r"""Sampler diagnostics: why the main job's samplers rank as they do.

Uses the main job's models (``experiments/configs/diagnostics.py`` is
``compare_samplers.py``'s config, so in the main job's workdir it reloads
``model_d<d>_s<seed>`` instead of training) and writes every run to ``runs.csv``, and from it
tables whose cells are means over the training seeds (over the sampling runs for the exact
score, over the data means for ``sdes``) with their standard error ``_se`` and the spread
``_sd`` between them (``claims.spread``):

* ``score_error.png`` / ``score_error.csv``: the model's relative score error
  ``E ||s_theta(x_t, t) - grad log p_t(x_t)||^2 / E ||grad log p_t(x_t)||^2`` against ``t``,
  ``x_t ~ p_t`` (the exact marginal of the mixture);
* ``swap.csv/md``: the score-swap ablation: the model's score in one window of ``t`` and the
  exact score elsewhere, sampled with Euler-Maruyama and PF-ODE Heun at one NFE, sliced W2 to
  exact samples; the window where the model's error hurts most has the largest W2;
* ``trajectories.png``: reverse-SDE (Euler-Maruyama) and probability-flow (Heun) paths from the
  same prior draws in d = 2, exact score;
* ``pc_snr.csv/md``: predictor-corrector with the exact score over a sweep of the Langevin
  ``snr`` at two NFEs (sliced W2, the floor beside it);
* ``sdes.csv/md`` / ``sdes.png``: VP, sub-VP and VE at equal NFE, exact KL of each affine
  sampler on the Gaussian of the main job's exact table (``sde_lib.evaluation``, no Monte
  Carlo), over its data means;
* ``claims.md/csv`` and ``headline.md``: every comparison the diagnostics state, by the
  claims rule and paired where the runs share their seeds (``diagnostic_claims``), and the
  statements the README quotes from them (``headline``).

Run: ``python -m experiments.diagnostics --workdir runs/full`` (the full grid's workdir).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import sde_lib
import trainer
from experiments import claims, common
from experiments.configs import base
from sde_lib import evaluation
from trainer import cli, reporting

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE()}


@dataclasses.dataclass(frozen=True)
class DiagnosticsConfig:
    """The ``experiment`` section.

    Attributes:
      dims, train_seeds: the main job's models to diagnose.
      times: the times of the score-error curve.
      windows: the score-swap windows ``(t_lo, t_hi)``.
      swap_nfe: the NFE of the score-swap runs.
      snrs, pc_nfes: the predictor-corrector sweep (exact score, largest of ``dims``).
      sde_nfes: the NFEs of the VP / sub-VP / VE exact comparison.
      gaussian_dim, gaussian_var: its Gaussian (as in the main job).
      num_samples, sample_seeds: samples per run and sampling runs per model (score swap).
      pc_seeds: sampling runs per cell of the pc sweep (exact score: its cells' only noise), and
        pairs of exact sample sets for the floor.
      gaussian_seeds: the Gaussian's data means ``mu ~ N(0, I)`` for the exact VP / sub-VP / VE
        table (seeds ``seed``, ``seed + 1``, ...), as in the main job's exact table.
      seed: evaluation seed.
    """

    dims: tuple[int, ...]
    train_seeds: tuple[int, ...]
    times: tuple[float, ...]
    windows: tuple[tuple[float, float], ...]
    swap_nfe: int
    snrs: tuple[float, ...]
    pc_nfes: tuple[int, ...]
    sde_nfes: tuple[int, ...]
    gaussian_dim: int
    gaussian_var: tuple[float, float]
    num_samples: int
    sample_seeds: int
    pc_seeds: int
    gaussian_seeds: int
    seed: int

    def __post_init__(self):
        if not self.dims or not self.train_seeds:
            raise ValueError("dims and train_seeds must not be empty")
        if any(not 0 < t <= 1 for t in self.times):
            raise ValueError(f"times must lie in (0, 1], got {self.times!r}")
        if any(len(w) != 2 or not 0 <= w[0] < w[1] <= 1 for w in self.windows):
            raise ValueError(f"windows must be pairs 0 <= lo < hi <= 1, got {self.windows!r}")
        for name in ("swap_nfe", "num_samples", "sample_seeds", "pc_seeds", "gaussian_seeds",
                     "gaussian_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


RUN_COLUMNS = ("table", "dim", "sde", "method", "case", "nfe", "group", "run", "value")


def score_error_runs(sde, gmm, score_fns, seeds, times, num, key, dim) -> list[dict]:
    """Each model's relative score error at each time: one run per (time, training seed); the
    models share the ``x_t`` of a time, so their errors pair across times by the seed."""
    exact = gmm.score_fn(sde)
    runs = []
    for i, t in enumerate(times):
        x = gmm.marginal(sde, t).sample(jax.random.fold_in(key, i), num)
        tb = jnp.full((num,), t, x.dtype)
        s = exact(x, tb)
        norm = float(jnp.mean(jnp.sum(s**2, -1)))
        runs += [{"table": "score_error", "dim": dim, "case": t, "group": seed, "run": 0,
                  "value": float(jnp.mean(jnp.sum((f(x, tb) - s) ** 2, -1))) / norm}
                 for seed, f in zip(seeds, score_fns, strict=True)]
    return runs


def swapped(model_fn, exact_fn, lo: float, hi: float):
    """``score_fn`` that is the model's for ``lo <= t < hi`` (``t <= hi`` when ``hi = 1``) and
    the exact one elsewhere."""
    def score_fn(x, t):
        inside = ((t >= lo) & ((t < hi) | (hi >= 1.0)))[:, None]
        return jnp.where(inside, model_fn(x, t), exact_fn(x, t))
    return score_fn


def _sw2_runs(sde, gmm, score_fn, method, nfe, num_samples, seeds, key,
              **options) -> list[float]:
    """Sliced W2 of ``seeds`` sampling runs to as many exact sample sets; run ``r`` draws with
    ``fold_in(key, r)`` whatever the score, so runs of the same ``r`` pair across scores."""
    sampler = sde_lib.SAMPLERS[method]
    steps = sampler.num_steps_for(nfe, **options)
    dim = gmm.dim
    draw = jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, (num_samples, dim),
                                            method=method, num_steps=steps, **options)[0])
    out = []
    for r in range(seeds):
        x = np.asarray(draw(jax.random.fold_in(key, r)))
        exact = np.asarray(gmm.sample(jax.random.fold_in(key, 100 + r), num_samples))
        out.append(common.sliced_wasserstein(x, exact, jax.random.fold_in(key, 7))
                   if np.all(np.isfinite(x)) else np.inf)
    return out


EXACT_WINDOW = "none (exact score)"
SWAP_METRIC = "sliced W2 (model score in the window)"


def swap_runs(sde, gmm, score_fns, seeds, exp, key, dim) -> list[dict]:
    """The score-swap ablation's runs: the model's score in one window of ``t`` (or all of it),
    the exact one elsewhere, per training seed and sampling run; the exact score's runs once
    (``group`` empty: no model)."""
    runs = []
    exact_fn = gmm.score_fn(sde)
    for label, (lo, hi) in [("all t", (0.0, 1.0)),
                            *((f"[{lo:g}, {hi:g}{']' if hi >= 1 else ')'}", (lo, hi))
                              for lo, hi in exp.windows)]:
        for method in ("euler_maruyama", "pf_ode_heun"):
            for seed, f in zip(seeds, score_fns, strict=True):
                values = _sw2_runs(sde, gmm, swapped(f, exact_fn, lo, hi), method,
                                   exp.swap_nfe, exp.num_samples, exp.sample_seeds, key)
                runs += [{"table": "swap", "dim": dim, "method": method, "case": label,
                          "nfe": exp.swap_nfe, "group": seed, "run": r, "value": v}
                         for r, v in enumerate(values)]
    for method in ("euler_maruyama", "pf_ode_heun"):
        values = _sw2_runs(sde, gmm, exact_fn, method, exp.swap_nfe, exp.num_samples,
                           exp.sample_seeds, key)
        runs += [{"table": "swap", "dim": dim, "method": method, "case": EXACT_WINDOW,
                  "nfe": exp.swap_nfe, "run": r, "value": v} for r, v in enumerate(values)]
    return runs


def trajectories(sde, score_fn, key, num_paths=12, nfe=100):
    """Paths ``(K + 1, n, 2)`` of Euler-Maruyama and PF-ODE Heun from the same prior draws."""
    x_T = sde.prior_sampling(key, (num_paths, 2))
    paths = {}
    for method in ("euler_maruyama", "pf_ode_heun"):
        sampler = sde_lib.SAMPLERS[method]
        steps = sampler.num_steps_for(nfe)
        step, coeffs = sampler.build(sde, score_fn, steps, 1e-3, sampler.check_options({}))
        keys = jax.random.split(jax.random.fold_in(key, 1), steps)

        def body(x, inputs, step=step):
            k, c = inputs
            x_next, x_mean = step(k, x, c)
            return x_next, x_mean

        _, xs = lax.scan(body, x_T, (keys, coeffs))
        paths[method] = np.concatenate([np.asarray(x_T)[None], np.asarray(xs)])
    return paths


def pc_runs(sde, gmm, exp, key, dim) -> list[dict]:
    """Predictor-corrector with the exact score at each snr and NFE (``pc_seeds`` runs each,
    paired across snrs by the run), and the floor: sliced W2 between two exact sample sets
    (``pc_seeds`` pairs)."""
    score_fn = gmm.score_fn(sde)
    runs = [{"table": "floor", "dim": dim, "group": i, "run": 0,
             "value": common.sliced_wasserstein(
                 np.asarray(gmm.sample(jax.random.fold_in(key, 2 * i + 1), exp.num_samples)),
                 np.asarray(gmm.sample(jax.random.fold_in(key, 2 * i + 2), exp.num_samples)),
                 jax.random.fold_in(key, 7))} for i in range(exp.pc_seeds)]
    for snr in exp.snrs:
        for nfe in exp.pc_nfes:
            values = _sw2_runs(sde, gmm, score_fn, "pc", nfe, exp.num_samples, exp.pc_seeds,
                               key, snr=snr)
            runs += [{"table": "pc_snr", "dim": dim, "method": "pc", "case": snr, "nfe": nfe,
                      "group": r, "run": 0, "value": v} for r, v in enumerate(values)]
    return runs


def sde_runs(exp) -> list[dict]:
    """The exact KL (nats) of every affine sampler on VP, sub-VP and VE at each NFE, one run
    per data mean of the main job's Gaussian (``common.gaussian_testbed``, seeds ``exp.seed``,
    ``exp.seed + 1``, ...): no Monte Carlo, but the cells vary with the data mean."""
    datas = [(s, common.gaussian_testbed(exp, s))
             for s in range(exp.seed, exp.seed + exp.gaussian_seeds)]
    runs = []
    for name, sde in SDES.items():
        for method, sampler in sde_lib.SAMPLERS.items():
            if sampler.adaptive or not sampler.affine:
                continue
            for nfe in exp.sde_nfes:
                steps = sampler.num_steps_for(nfe)
                try:
                    laws = [evaluation.gaussian_sampler_law(sde, d.mean, d.var, method, steps)
                            for _, d in datas]
                except ValueError:
                    continue
                runs += [{"table": "sdes", "dim": exp.gaussian_dim, "sde": name,
                          "method": method, "nfe": nfe, "group": s, "run": 0,
                          "value": float(evaluation.gaussian_kl(law, d))}
                         for (s, d), law in zip(datas, laws, strict=True)]
    return runs


def run(config, workdir: str) -> dict[str, str]:
    """Loads (or trains) the main job's models in ``workdir`` and writes the diagnostics."""
    exp = trainer.experiment_config(DiagnosticsConfig, config)
    configs = {(d, s): base.override(config, {"data.dim": d, "training.seed": s})
               for d in exp.dims for s in exp.train_seeds}
    for c in configs.values():
        trainer.validate_config(c)
    sde = trainer.parse_config(config).sde.build()
    pc = sde_lib.SAMPLERS["pc"]
    for nfe in exp.pc_nfes:  # checked before anything trains
        try:
            sde_lib.sampling.build_sampler(sde, None, "pc", pc.num_steps_for(nfe), 1e-3)
        except ValueError as e:
            raise ValueError(f"experiment.pc_nfes: {nfe} does not run: {e}") from None
    key = jax.random.key(exp.seed)
    runs, paths_2d = [], None
    bar = common.progress(desc="diagnostics", total=3 * len(exp.dims) + 1, unit="phase")
    for dim in exp.dims:
        models = [trainer.train_and_evaluate(configs[(dim, s)],
                                             os.path.join(workdir, f"model_d{dim}_s{s}"))
                  for s in exp.train_seeds]
        sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
        score_fns = [m["score_fn"] for m in models]
        k = jax.random.fold_in(key, dim)
        bar.set_postfix_str(f"d={dim}: score error against t")
        runs += score_error_runs(sde, gmm, score_fns, exp.train_seeds, exp.times,
                                 exp.num_samples, k, dim)
        bar.update(1)
        bar.set_postfix_str(f"d={dim}: score-swap ablation")
        runs += swap_runs(sde, gmm, score_fns, exp.train_seeds, exp, k, dim)
        bar.update(1)
        bar.set_postfix_str(f"d={dim}: pc snr sweep, trajectories")
        if dim == max(exp.dims):
            runs += pc_runs(sde, gmm, exp, k, dim)
        if dim == 2:
            paths_2d = (trajectories(sde, gmm.score_fn(sde), k), gmm)
        bar.update(1)
    bar.set_postfix_str(f"VP / sub-VP / VE exact KL, {exp.gaussian_seeds} data means")
    runs += sde_runs(exp)
    bar.update(1)
    bar.close()
    out = common.write_csv(workdir, "runs", runs, RUN_COLUMNS)
    out.update(write_reports(workdir, runs))
    out.update(write_figures(workdir, tables(runs), paths_2d, exp))
    return out


# ----- tables and claims -------------------------------------------------------------------------

def _select(runs, table, **where) -> list[dict]:
    return [r for r in runs if r["table"] == table
            and all(r.get(k) == v for k, v in where.items())]


def _cell(runs, name="value") -> dict:
    """``claims.spread`` of ``runs`` (without the within-seed sd); runs with no ``group`` (the
    exact score's in the swap ablation) are each their own group."""
    runs = [{**r, "group": r.get("group", f"run {r['run']}")} for r in runs]
    stats = claims.spread(runs, name)
    return {k: v for k, v in stats.items() if not k.endswith("_within_sd")}


def _keys(runs, *names) -> list[tuple]:
    return list(dict.fromkeys(tuple(r.get(n) for n in names) for r in runs))


def tables(runs) -> dict[str, list[dict]]:
    """The four tables of the runs: each cell the mean over its groups (training seeds; sampling
    runs for the exact score; data means for ``sdes``) with ``_se`` and ``_sd``
    (``claims.spread``)."""
    out = {"score_error": [], "swap": [], "pc_snr": [], "sdes": []}
    for dim, t in _keys(_select(runs, "score_error"), "dim", "case"):
        stats = _cell(_select(runs, "score_error", dim=dim, case=t))
        out["score_error"].append({"dim": dim, "t": t, "groups": len(
            _select(runs, "score_error", dim=dim, case=t)), **{
            k.replace("value", "rel_score_err"): v for k, v in stats.items()}})
    for dim, window in _keys(_select(runs, "swap"), "dim", "case"):
        row = {"dim": dim, "model_window": window}
        for method in ("euler_maruyama", "pf_ode_heun"):
            stats = _cell(_select(runs, "swap", dim=dim, case=window, method=method))
            row.update({k.replace("value", f"{method}_sw2"): v for k, v in stats.items()})
        out["swap"].append(row)
    for dim, in _keys(_select(runs, "floor"), "dim"):
        floor = _cell(_select(runs, "floor", dim=dim))
        for snr, in _keys(_select(runs, "pc_snr", dim=dim), "case"):
            row = {"dim": dim, "snr": snr, "floor": floor["value"], "floor_se": floor["value_se"]}
            for nfe, in _keys(_select(runs, "pc_snr", dim=dim, case=snr), "nfe"):
                stats = _cell(_select(runs, "pc_snr", dim=dim, case=snr, nfe=nfe))
                row.update({k.replace("value", f"sw2_nfe{nfe}"): v for k, v in stats.items()})
            out["pc_snr"].append(row)
    for sde, method, nfe in _keys(_select(runs, "sdes"), "sde", "method", "nfe"):
        cell = _select(runs, "sdes", sde=sde, method=method, nfe=nfe)
        out["sdes"].append({"sde": sde, "sampler": method, "nfe": nfe, "data_means": len(cell),
                            **{k.replace("value", "kl_nats"): v
                               for k, v in _cell(cell).items()}})
    return out


def _paired(context, metric, a, runs_a, b, runs_b):
    """``claims.paired`` on the runs' values; runs with no model (``group`` empty) stand beside
    every training seed's run of the same ``run``."""
    groups = sorted({r["group"] for r in [*runs_a, *runs_b] if "group" in r})

    def expand(runs):
        return [{**r, "group": g} for r in runs for g in groups] if runs and all(
            "group" not in r for r in runs) else runs
    return claims.paired(context, metric, a, expand(runs_a), b, expand(runs_b), "value")


def diagnostic_claims(runs) -> list[dict]:
    """Every comparison the diagnostics state, by ``claims``' rule, paired where the runs
    share their seeds: the score error at the first time against every later one (per
    dimension; the models' errors paired by training seed), the swap windows against each
    other (per dimension and sampler; paired by training seed and sampling run), the pc snrs
    against each other (paired by run) and against the floor (unpaired), and on each SDE at
    each NFE the sampler with the lowest mean exact KL against every other (paired by data
    mean)."""
    made = []
    for dim, in _keys(_select(runs, "score_error"), "dim"):
        times = [t for t, in _keys(_select(runs, "score_error", dim=dim), "case")]
        first = _select(runs, "score_error", dim=dim, case=times[0])
        for t in times[1:]:
            c = _paired(f"d = {dim}", "relative score error", f"t = {times[0]:g}", first,
                        f"t = {t:g}", _select(runs, "score_error", dim=dim, case=t))
            made += [c] if c else []
    for dim, method in _keys(_select(runs, "swap"), "dim", "method"):
        windows = [w for w, in _keys(_select(runs, "swap", dim=dim, method=method), "case")]
        for a, b in itertools.combinations(windows, 2):
            nfe = _select(runs, "swap", dim=dim, method=method)[0]["nfe"]
            c = _paired(f"d = {dim}, {method}, NFE {nfe}",
                        SWAP_METRIC, a,
                        _select(runs, "swap", dim=dim, method=method, case=a), b,
                        _select(runs, "swap", dim=dim, method=method, case=b))
            made += [c] if c else []
    for dim, in _keys(_select(runs, "floor"), "dim"):
        floor = _cell(_select(runs, "floor", dim=dim))
        for nfe, in _keys(_select(runs, "pc_snr", dim=dim), "nfe"):
            context = f"d = {dim}, pc, NFE {nfe}"
            snrs = [s for s, in _keys(_select(runs, "pc_snr", dim=dim, nfe=nfe), "case")]
            cells = {s: _select(runs, "pc_snr", dim=dim, nfe=nfe, case=s) for s in snrs}
            for a, b in itertools.combinations(snrs, 2):
                c = _paired(context, "sliced W2", f"snr {a:g}", cells[a], f"snr {b:g}",
                            cells[b])
                made += [c] if c else []
            for s in snrs:
                cell = _cell(cells[s])
                if cell["value_se"] is not None and floor["value_se"] is not None:
                    made.append(claims.compare(
                        context, "sliced W2 against the floor", f"snr {s:g}", cell["value"],
                        cell["value_se"], "floor", floor["value"], floor["value_se"]))
    for sde, nfe in _keys(_select(runs, "sdes"), "sde", "nfe"):
        cells = {m: _select(runs, "sdes", sde=sde, nfe=nfe, method=m)
                 for m, in _keys(_select(runs, "sdes", sde=sde, nfe=nfe), "method")}
        best = min(cells, key=lambda m: _cell(cells[m])["value"])
        for m in cells:
            c = _paired(f"{sde}, NFE {nfe}", "exact KL in nats", best, cells[best], m,
                        cells[m]) if m != best else None
            made += [c] if c else []
    return made


README_MARKERS = claims.readme_markers("diagnostics", "experiments.diagnostics.headline")


def headline(rows_of_claims) -> str:
    """The statements the README quotes, from the claims alone: per dimension, the times at
    which the score error is resolved below its error at the first time; the lowest window of
    the swap ablation and the lowest snr of the pc sweep with what is not resolved from them,
    and the windows resolved above and below the exact score everywhere;
    which snrs are not resolved above the floor; on each SDE at each NFE the sampler with the
    lowest exact KL and those not resolved from it."""
    rows = [{**c, **{k: float(c[k]) for k in ("mean_a", "mean_b", "z")}}
            for c in rows_of_claims]
    lines = []
    for context in dict.fromkeys(c["context"] for c in rows
                                 if c["metric"] == "relative score error"):
        cs = [c for c in rows if c["context"] == context and c["metric"] ==
              "relative score error"]
        above = [c for c in cs if c["z"] >= claims.Z_RESOLVED]
        rest = [c["b"].removeprefix("t = ") for c in cs if c not in above]
        lines.append(f"- {context}: the relative score error at {cs[0]['a']} "
                     f"({cs[0]['mean_a']:.3g}) is resolved above its value at {len(above)} of "
                     f"the {len(cs)} later times"
                     + (f"; not resolved at t = {', '.join(rest)}." if rest else "."))
    pairwise = [c for c in rows if c["metric"] in (SWAP_METRIC, "sliced W2", "exact KL in nats")]
    lines += claims.leaders(pairwise)
    for context in dict.fromkeys(c["context"] for c in rows if c["metric"] == SWAP_METRIC):
        exact = [c for c in rows if c["context"] == context and c["b"] == EXACT_WINDOW]
        side = {v: [c["a"] for c in exact if c["verdict"] == f"{c['a']} {v} {EXACT_WINDOW}"]
                for v in ("above", "below")}
        lines.append(f"- {context}: against the exact score everywhere, resolved above it: "
                     f"{', '.join(side['above']) or 'none'}; below it: "
                     f"{', '.join(side['below']) or 'none'}; of {len(exact)}.")
    for context in dict.fromkeys(c["context"] for c in rows
                                 if c["metric"] == "sliced W2 against the floor"):
        cs = [c for c in rows if c["context"] == context
              and c["metric"] == "sliced W2 against the floor"]
        level = [c["a"] for c in cs if c["verdict"] == "not resolved"]
        lines.append(f"- {context}: not resolved from the floor ({cs[0]['mean_b']:.3g}): "
                     f"{', '.join(level) or 'none'}; {len(cs) - len(level)} of {len(cs)} "
                     f"resolved above it.")
    return "\n".join(lines) + "\n"


def write_reports(workdir: str, runs) -> dict[str, str]:
    """The tables (``score_error``, ``swap``, ``pc_snr``, ``sdes``: .csv and .md), the claims
    and ``headline.md`` of ``runs``."""
    out = {}
    for name, rows in tables(runs).items():
        if rows:
            out.update(common.write_table(workdir, name, rows, list(dict.fromkeys(
                k for r in rows for k in r))))
    made = diagnostic_claims(runs)
    out.update(claims.write_with_headline(workdir, made, headline(made),
                                          rule=f"{claims.RULE}\n\n{claims.PAIRED_RULE}"))
    return out


def rewrite_reports(workdir: str) -> dict[str, str]:
    """The tables, claims and headline of a finished run written again from its ``runs.csv``
    by the current code; returns their paths."""
    return write_reports(workdir, common.read_table(os.path.join(workdir, "runs.csv")))


def score_error_figure(err_rows: list[dict], dims, num_seeds: int):
    """``score_error.png`` (a matplotlib ``Figure``): the relative score error of the trained
    models against t, one line per dimension, mean +- sd band over ``num_seeds`` seeds."""
    plt = reporting.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for dim in dims:
        rows = [r for r in err_rows if r["dim"] == dim]
        t = np.array([r["t"] for r in rows])
        m = np.array([r["rel_score_err"] for r in rows])
        sd = np.array([r["rel_score_err_sd"] or 0.0 for r in rows])
        ax.plot(t, m, "o-", ms=3, label=f"d = {dim}")
        ax.fill_between(t, np.maximum(m - sd, 1e-6), m + sd, alpha=0.2)
    ax.set(yscale="log", xlabel="diffusion time t", ylabel="relative score error\n"
           "E||s - grad log p_t||^2 / E||grad log p_t||^2",
           title=f"trained model vs exact score\n(mean +- sd over "
           f"{num_seeds} training seeds)")
    reporting.plain_log_ticks(ax, "y")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sdes_figure(sde_rows: list[dict], gaussian_dim: int):
    """The exact KL of each sampler against NFE, one panel per SDE (``sdes.png``)."""
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, len(SDES), figsize=(5 * len(SDES), 3.8), sharey=True)
    for ax, name in zip(axes, SDES, strict=True):
        for method in dict.fromkeys(r["sampler"] for r in sde_rows):
            pts = sorted((r["nfe"], r["kl_nats"]) for r in sde_rows
                         if r["sde"] == name and r["sampler"] == method)
            if pts:
                ax.loglog(*zip(*pts, strict=True), "o-", ms=3, label=method)
        ax.set(title=f"{name}: exact KL, Gaussian d = {gaussian_dim}",
               xlabel="NFE (score evaluations)", ylabel="KL(sampler || data), nats")
        reporting.plain_log_ticks(ax)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def write_figures(workdir, tabled, paths_2d, exp) -> dict[str, str]:
    """``score_error.png`` and ``sdes.png`` from the ``tables``, ``trajectories.png`` from the
    paths of d = 2 where there are some."""
    plt = reporting.pyplot()
    out = {}
    err_rows, sde_rows = tabled["score_error"], tabled["sdes"]
    out.update(reporting.save_figure(score_error_figure(err_rows, exp.dims,
                                                        len(exp.train_seeds)),
                                     workdir, "score_error.png"))
    out.update(reporting.save_figure(sdes_figure(sde_rows, exp.gaussian_dim), workdir,
                                     "sdes.png"))
    if paths_2d is not None:
        paths, gmm = paths_2d
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
        for ax, (method, xs) in zip(axes, paths.items(), strict=True):
            for j in range(xs.shape[1]):
                ax.plot(xs[:, j, 0], xs[:, j, 1], lw=0.7)
                ax.plot(xs[-1, j, 0], xs[-1, j, 1], "k.", ms=4)
            means = np.asarray(gmm.means)
            ax.plot(means[:, 0], means[:, 1], "r+", ms=12, label="component means")
            ax.set(title=f"{method} from the same prior draws (exact score)", xlabel="x_1",
                   ylabel="x_2")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        out.update(reporting.save_figure(fig, workdir, "trajectories.png"))
    return out


def main(argv=None):
    cli.run_main(run, common.config_file("diagnostics"), argv, settings=DiagnosticsConfig)


if __name__ == "__main__":
    main()
