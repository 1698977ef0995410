r"""DDPM to SDE: the discrete chain and its sampler converge to the VP SDE as N grows.

* Marginals: ``max_i |alpha_bar_i - alpha(t_i)^2|`` between the chain of ``VPSDE(N=N)``
  (``discrete_betas = linspace(beta_min / N, beta_max / N, N)``, Ho et al. 2020) and the SDE's
  ``alpha(t)^2 = exp(-int_0^t beta)`` at ``t_i = (i + 1) / N`` (Song et al. 2021, Appendix B).
* Samplers: with the exact score of Gaussian data ``N(mu, s^2 I)``, the weak error
  ``|Var(x) - s^2|`` of Ho et al.'s ancestral sampler (variance ``beta``) on the N-step chain
  (``DiscreteVPSDE``, with the exact score of the chain's own marginals) and of Euler-Maruyama on
  the reverse VP SDE with N steps (Monte Carlo standard error in the table).

The rates are fitted by least squares on log-log axes. Writes ``ddpm_to_sde.csv/md`` and
``ddpm_to_sde.png``. Run: ``python -m experiments.ddpm_to_sde --workdir runs/ddpm_to_sde``.
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


@dataclasses.dataclass(frozen=True)
class DDPMToSDEConfig:
    """The ``experiment`` section: Ns: chain lengths; num_samples, dim: the sampler Monte Carlo
    (samples x dimensions); mu, s: the Gaussian data."""

    Ns: tuple[int, ...]
    num_samples: int
    dim: int
    mu: float
    s: float
    seed: int


def marginal_error(N: int) -> float:
    sde = sde_lib.VPSDE(N=N)
    alpha_bar = np.cumprod(1.0 - np.asarray(sde.discrete_betas, np.float64))
    t = np.arange(1, N + 1) / N
    alpha2 = np.exp(-(sde.beta_min * t + 0.5 * t**2 * (sde.beta_max - sde.beta_min)))
    return float(np.max(np.abs(alpha_bar - alpha2)))


def sampler_error(rng, N, method, config) -> tuple[float, float]:
    """``(|Var - s^2|, its standard error)`` of ``method`` with ``N`` steps: ancestral sampling
    on the chain of ``VPSDE(N=N)`` as an SDE, Euler-Maruyama on ``VPSDE(N=N)``."""
    sde = sde_lib.VPSDE(N=N)
    options = {}
    if method == "ddpm_ancestral":
        sde, options = sde_lib.DiscreteVPSDE.from_sde(sde), {"variance": "beta"}
    data = sde_lib.GaussianMixture(np.ones(1), np.full((1, config.dim), config.mu),
                                   (config.s**2 * np.eye(config.dim))[None])
    x, _ = jax.jit(lambda k: sde_lib.sample(k, sde, data.score_fn(sde),
                                            (config.num_samples, config.dim), method=method,
                                            num_steps=N, **options))(rng)
    n = config.num_samples * config.dim
    return abs(float(jnp.var(x)) - config.s**2), config.s**2 * math.sqrt(2 / (n - 1))


def _slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(config, workdir: str) -> dict[str, str]:
    """Runs ``config`` (``experiments/configs/ddpm_to_sde.py``) into ``workdir``; returns the
    paths written."""
    config = trainer.experiment_config(DDPMToSDEConfig, config)
    rng = jax.random.key(config.seed)
    rows = []
    for N in common.progress(config.Ns, "ddpm_to_sde: chain lengths N", unit="N"):
        row = {"N": N, "marginal_err": marginal_error(N)}
        for method in ("ddpm_ancestral", "euler_maruyama"):
            err, se = sampler_error(rng, N, method, config)
            row[f"{method}_var_err"] = err
            row["var_se"] = se
        rows.append(row)
    Ns = np.array(config.Ns, float)
    rates = {"N": "fitted rate", "marginal_err": _slope(Ns, [r["marginal_err"] for r in rows])}
    for method in ("ddpm_ancestral", "euler_maruyama"):
        rates[f"{method}_var_err"] = _slope(Ns, [r[f"{method}_var_err"] for r in rows])
    columns = ["N", "marginal_err", "ddpm_ancestral_var_err", "euler_maruyama_var_err",
               "var_se"]
    paths = common.write_table(workdir, "ddpm_to_sde", rows + [rates], columns)
    paths.update(reporting.save_figure(figure(rows, rates), workdir, "ddpm_to_sde.png"))
    return paths


def figure(rows: list[dict], rates: dict):
    """``ddpm_to_sde.png``: the chain's marginal error and the two samplers' weak error against
    N, log-log, with the fitted rates in the legends (a matplotlib ``Figure``)."""
    plt = reporting.pyplot()
    Ns = np.array([r["N"] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].loglog(Ns, [r["marginal_err"] for r in rows], "o-",
                   label=f"slope {rates['marginal_err']:.2f}")
    for method in ("ddpm_ancestral", "euler_maruyama"):
        axes[1].loglog(Ns, [r[f"{method}_var_err"] for r in rows], "o-",
                       label=f"{method}, slope {rates[f'{method}_var_err']:.2f}")
    axes[1].axhline(rows[0]["var_se"], color="k", ls=":", label="Monte Carlo standard error")
    axes[0].set(xlabel="N (chain steps)", ylabel="max_i |alpha_bar_i - alpha(t_i)^2|",
                title="DDPM chain marginals vs the VP SDE")
    axes[1].set(xlabel="N (sampler steps)", ylabel="|Var(x) - s^2| (weak error)",
                title="sampler weak error, exact score")
    for ax in axes:
        reporting.plain_log_ticks(ax)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def main(argv=None):
    cli.run_main(run, common.config_file("ddpm_to_sde"), argv, settings=DDPMToSDEConfig)


if __name__ == "__main__":
    main()
