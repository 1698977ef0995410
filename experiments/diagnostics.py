r"""Sampler diagnostics: why the main job's samplers rank as they do.

Uses the main job's models (``experiments/configs/diagnostics.py`` is
``compare_samplers.py``'s config, so in the main job's workdir it reloads
``model_d<d>_s<seed>`` instead of training) and writes, with every number a mean +- sd over the
training seeds (and sampling seeds where there is sampling noise):

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
  Carlo).

Run: ``python -m experiments.diagnostics --workdir runs/full`` (the full grid's workdir).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import sde_lib
import trainer
from experiments import common
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
      num_samples, sample_seeds: samples per run and sampling seeds.
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
    seed: int

    def __post_init__(self):
        if not self.dims or not self.train_seeds:
            raise ValueError("dims and train_seeds must not be empty")
        if any(not 0 < t <= 1 for t in self.times):
            raise ValueError(f"times must lie in (0, 1], got {self.times!r}")
        if any(len(w) != 2 or not 0 <= w[0] < w[1] <= 1 for w in self.windows):
            raise ValueError(f"windows must be pairs 0 <= lo < hi <= 1, got {self.windows!r}")
        for name in ("swap_nfe", "num_samples", "sample_seeds", "gaussian_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def _mean_sd(values) -> dict:
    stats = common.summarize([{"v": v} for v in values], ("v",))
    return {"mean": stats["v"], "sd": stats["v_sd"]}


def score_errors(sde, gmm, score_fns, times, num, key) -> list[dict]:
    """Relative score error of each model at each time (mean +- sd over the models)."""
    exact = gmm.score_fn(sde)
    rows = []
    for i, t in enumerate(times):
        x = gmm.marginal(sde, t).sample(jax.random.fold_in(key, i), num)
        tb = jnp.full((num,), t, x.dtype)
        s = exact(x, tb)
        norm = float(jnp.mean(jnp.sum(s**2, -1)))
        errs = [float(jnp.mean(jnp.sum((f(x, tb) - s) ** 2, -1))) / norm for f in score_fns]
        stats = _mean_sd(errs)
        rows.append({"t": t, "rel_score_err": stats["mean"], "rel_score_err_sd": stats["sd"]})
    return rows


def swapped(model_fn, exact_fn, lo: float, hi: float):
    """``score_fn`` that is the model's for ``lo <= t < hi`` (``t <= hi`` when ``hi = 1``) and
    the exact one elsewhere."""
    def score_fn(x, t):
        inside = ((t >= lo) & ((t < hi) | (hi >= 1.0)))[:, None]
        return jnp.where(inside, model_fn(x, t), exact_fn(x, t))
    return score_fn


def _sw2_runs(sde, gmm, score_fn, method, nfe, exp, key, **options) -> list[float]:
    sampler = sde_lib.SAMPLERS[method]
    steps = sampler.num_steps_for(nfe, **options)
    dim = gmm.dim
    draw = jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, (exp.num_samples, dim),
                                            method=method, num_steps=steps, **options)[0])
    out = []
    for r in range(exp.sample_seeds):
        x = np.asarray(draw(jax.random.fold_in(key, r)))
        exact = np.asarray(gmm.sample(jax.random.fold_in(key, 100 + r), exp.num_samples))
        out.append(common.sliced_wasserstein(x, exact, jax.random.fold_in(key, 7))
                   if np.all(np.isfinite(x)) else np.inf)
    return out


def swap_ablation(sde, gmm, score_fns, exp, key, dim) -> list[dict]:
    rows = []
    exact_fn = gmm.score_fn(sde)
    for label, (lo, hi) in [("all t", (0.0, 1.0)),
                            *((f"[{lo:g}, {hi:g}{']' if hi >= 1 else ')'}", (lo, hi))
                              for lo, hi in exp.windows)]:
        row = {"dim": dim, "model_window": label}
        for method in ("euler_maruyama", "pf_ode_heun"):
            runs = [v for f in score_fns
                    for v in _sw2_runs(sde, gmm, swapped(f, exact_fn, lo, hi), method,
                                       exp.swap_nfe, exp, key)]
            stats = _mean_sd(runs)
            row[f"{method}_sw2"], row[f"{method}_sw2_sd"] = stats["mean"], stats["sd"]
        rows.append(row)
    stats = {m: _mean_sd(_sw2_runs(sde, gmm, exact_fn, m, exp.swap_nfe, exp, key))
             for m in ("euler_maruyama", "pf_ode_heun")}
    rows.append({"dim": dim, "model_window": "none (exact score)",
                 **{f"{m}_sw2": s["mean"] for m, s in stats.items()},
                 **{f"{m}_sw2_sd": s["sd"] for m, s in stats.items()}})
    return rows


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


def pc_sweep(sde, gmm, exp, key, dim, floor) -> list[dict]:
    rows = []
    score_fn = gmm.score_fn(sde)
    for snr in exp.snrs:
        row = {"dim": dim, "snr": snr, "floor": floor}
        for nfe in exp.pc_nfes:
            stats = _mean_sd(_sw2_runs(sde, gmm, score_fn, "pc", nfe, exp, key, snr=snr))
            row[f"sw2_nfe{nfe}"], row[f"sw2_nfe{nfe}_sd"] = stats["mean"], stats["sd"]
        rows.append(row)
    return rows


def sde_comparison(exp) -> list[dict]:
    data = common.gaussian_testbed(exp)
    mean, var = data
    rows = []
    for name, sde in SDES.items():
        for method, sampler in sde_lib.SAMPLERS.items():
            if sampler.adaptive or not sampler.affine:
                continue
            for nfe in exp.sde_nfes:
                steps = sampler.num_steps_for(nfe)
                try:
                    law = evaluation.gaussian_sampler_law(sde, mean, var, method, steps)
                except ValueError:
                    continue
                rows.append({"sde": name, "sampler": method, "nfe": nfe,
                             "kl_nats": float(evaluation.gaussian_kl(law, data))})
    return rows


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
    err_rows, swap_rows, pc_rows, paths_2d = [], [], [], None
    bar = common.progress(desc="diagnostics", total=3 * len(exp.dims) + 1, unit="phase")
    for dim in exp.dims:
        models = [trainer.train_and_evaluate(configs[(dim, s)],
                                             os.path.join(workdir, f"model_d{dim}_s{s}"))
                  for s in exp.train_seeds]
        sde, gmm = models[0]["sde"], models[0]["dataset"].gmm
        score_fns = [m["score_fn"] for m in models]
        k = jax.random.fold_in(key, dim)
        bar.set_postfix_str(f"d={dim}: score error against t")
        err_rows += [{"dim": dim, **r} for r in score_errors(sde, gmm, score_fns, exp.times,
                                                              exp.num_samples, k)]
        bar.update(1)
        bar.set_postfix_str(f"d={dim}: score-swap ablation")
        swap_rows += swap_ablation(sde, gmm, score_fns, exp, k, dim)
        bar.update(1)
        bar.set_postfix_str(f"d={dim}: pc snr sweep, trajectories")
        if dim == max(exp.dims):
            floor = [common.sliced_wasserstein(
                np.asarray(gmm.sample(jax.random.fold_in(k, 2 * i + 1), exp.num_samples)),
                np.asarray(gmm.sample(jax.random.fold_in(k, 2 * i + 2), exp.num_samples)),
                jax.random.fold_in(k, 7)) for i in range(8)]
            pc_rows = pc_sweep(sde, gmm, exp, k, dim, float(np.mean(floor)))
        if dim == 2:
            paths_2d = (trajectories(sde, gmm.score_fn(sde), k), gmm)
        bar.update(1)
    bar.set_postfix_str("VP / sub-VP / VE exact KL")
    sde_rows = sde_comparison(exp)
    bar.update(1)
    bar.close()
    out = common.write_table(workdir, "score_error", err_rows,
                             ["dim", "t", "rel_score_err", "rel_score_err_sd"])
    out.update(common.write_table(workdir, "swap", swap_rows, list(swap_rows[0])))
    if pc_rows:
        out.update(common.write_table(workdir, "pc_snr", pc_rows, list(pc_rows[0])))
    out.update(common.write_table(workdir, "sdes", sde_rows, ["sde", "sampler", "nfe",
                                                                "kl_nats"]))
    out.update(write_figures(workdir, err_rows, sde_rows, paths_2d, exp))
    return out


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


def write_figures(workdir, err_rows, sde_rows, paths_2d, exp) -> dict[str, str]:
    plt = reporting.pyplot()
    out = {}
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
