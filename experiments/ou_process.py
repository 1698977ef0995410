r"""The Ornstein-Uhlenbeck process ``dX = -beta X dt + sigma dW``: simulation against closed forms.

Euler-Maruyama paths from a fixed ``x_0`` (one compiled ``lax.scan``) are compared at several
times with the exact mean ``e^{-beta t} x_0`` and variance ``sigma^2 / (2 beta) (1 - e^{-2 beta
t})`` (``sde_lib.OrnsteinUhlenbeckSDE.marginal_prob``), each difference in units of its Monte
Carlo standard error (``z``); at ``T`` a Kolmogorov-Smirnov test against the exact ``p_T``, next to
the stationary law ``N(0, sigma^2 / (2 beta))`` that ``p_T`` approaches at rate ``e^{-beta T}``.
Euler-Maruyama's own bias (relative ``beta dt / 2`` in the stationary variance) is listed too.
Writes ``ou_moments.csv/md`` and ``ou_moments.png``.

Run: ``python -m experiments.ou_process --workdir runs/ou``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import sde_lib
import trainer
from experiments import common
from trainer import cli, reporting


@dataclasses.dataclass(frozen=True)
class OUConfig:
    """The ``experiment`` section: beta, sigma, T: the process; x0: the start; num_paths,
    num_steps: the simulation; num_checkpoints: the times compared (equally spaced in (0, T])."""

    beta: float
    sigma: float
    T: float
    x0: float
    num_paths: int
    num_steps: int
    num_checkpoints: int
    seed: int


def simulate(rng, sde, x0, num_paths, num_steps, num_checkpoints):
    """Euler-Maruyama paths; returns the times and the states there, ``(C,)`` and ``(C, n)``."""
    dt = sde.T / num_steps
    every = num_steps // num_checkpoints

    def step(x, inputs):
        k, key = inputs
        t = jnp.full((num_paths,), k * dt)
        drift, g = sde.sde(x[:, None], t)
        x = x + drift[:, 0] * dt + g * math.sqrt(dt) * jax.random.normal(key, x.shape)
        return x, x

    keys = jax.random.split(rng, num_steps)
    _, path = jax.lax.scan(step, jnp.full((num_paths,), x0), (jnp.arange(num_steps), keys))
    idx = np.arange(1, num_checkpoints + 1) * every - 1
    return (idx + 1) * dt, np.asarray(path)[idx]


def run(config, workdir: str) -> dict[str, str]:
    """Runs the simulation of ``config`` (``experiments/configs/ou_process.py``) into
    ``workdir``; returns the paths written."""
    config = trainer.experiment_config(OUConfig, config)
    sde = sde_lib.OrnsteinUhlenbeckSDE(beta=config.beta, sigma=config.sigma, T=config.T)
    times, xs = simulate(jax.random.key(config.seed), sde, config.x0, config.num_paths,
                         config.num_steps, config.num_checkpoints)
    n = config.num_paths
    rows = []
    for t, x in zip(times, xs, strict=True):
        mean, std = sde.marginal_prob(jnp.full((1, 1), config.x0), jnp.full((1,), t))
        m, v = float(mean[0, 0]), float(std[0]) ** 2
        rows.append({"t": float(t), "mean_sim": float(x.mean()), "mean_exact": m,
                     "z_mean": (float(x.mean()) - m) / math.sqrt(v / n),
                     "var_sim": float(x.var(ddof=1)), "var_exact": v,
                     "z_var": (float(x.var(ddof=1)) - v) / (v * math.sqrt(2 / (n - 1)))})
    # the law at T against the exact N(mean_T, var_T), and its distance to the stationary law
    ks = stats.kstest(xs[-1], "norm", args=(rows[-1]["mean_exact"],
                                            math.sqrt(rows[-1]["var_exact"])))
    stationary = sde.prior_std
    dt = config.T / config.num_steps
    rows.append({"t": "stationary", "mean_sim": float(xs[-1].mean()), "mean_exact": 0.0,
                 "var_sim": float(xs[-1].var(ddof=1)), "var_exact": stationary**2,
                 "z_mean": f"KS p = {ks.pvalue:.3f} vs p_T",
                 "z_var": f"EM bias {config.beta * dt / 2:.2%}"})
    paths = common.write_table(workdir, "ou_moments", rows,
                               ["t", "mean_sim", "mean_exact", "z_mean", "var_sim",
                                   "var_exact", "z_var"])
    plt = reporting.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    fine = np.linspace(0, config.T, 200)
    mean = config.x0 * np.exp(-config.beta * fine)
    sd = np.sqrt(config.sigma**2 / (2 * config.beta) * (1 - np.exp(-2 * config.beta * fine)))
    ax.plot(fine, mean, "k", label="exact mean")
    ax.fill_between(fine, mean - 2 * sd, mean + 2 * sd, color="k", alpha=0.15,
                    label="exact mean +- 2 sd")
    ax.errorbar(times, xs.mean(1), yerr=2 * xs.std(1), fmt="o", ms=3, capsize=2,
                label=f"Euler-Maruyama ({n} paths)")
    ax.set(xlabel="t", ylabel="X_t", title=f"OU: beta={config.beta}, sigma={config.sigma}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.update(reporting.save_figure(fig, workdir, "ou_moments.png"))
    return paths


def main(argv=None):
    cli.run_main(run, common.config_file("ou_process"), argv, settings=OUConfig)


if __name__ == "__main__":
    main()
