r"""DDPM to SDE: the discrete chain and its sampler converge to the VP SDE as N grows.

* Marginals: ``max_i |alpha_bar_i - alpha(t_i)^2|`` between the chain of ``VPSDE(N=N)``
  (``discrete_betas = linspace(beta_min / N, beta_max / N, N)``, Ho et al. 2020) and the SDE's
  ``alpha(t)^2 = exp(-int_0^t beta)`` at ``t_i = (i + 1) / N`` (Song et al. 2021, Appendix B).
* Samplers: with the exact score of Gaussian data ``N(mu, s^2 I)``, the weak error
  ``|Var(x) - s^2|`` of Ho et al.'s ancestral sampler (variance ``beta``) on the N-step chain
  (``DiscreteVPSDE``, with the exact score of the chain's own marginals) and of Euler-Maruyama on
  the reverse VP SDE with N steps. Both samplers are affine on Gaussian data, so their output
  law is Gaussian and is propagated exactly through their own steps in float64
  (``sde_lib.evaluation.gaussian_sampler_law``): ``*_var_err`` has no Monte Carlo error, and
  neither have the rates. ``*_var_err_mc`` is the same error from ``num_samples`` simulated
  samples (standard error ``var_se``), a check of the exact one.

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
from sde_lib import evaluation
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


def exact_sampler_error(N, method, config) -> float:
    """``|Var(x) - s^2|`` of ``method`` with ``N`` steps (as ``sampler_error``) from the exact
    law of its samples (``gaussian_sampler_law``, float64)."""
    with jax.enable_x64(True):
        sde, options = sde_lib.VPSDE(N=N), {}
        if method == "ddpm_ancestral":
            sde, options = sde_lib.DiscreteVPSDE.from_sde(sde), {"variance": "beta"}
        law = evaluation.gaussian_sampler_law(sde, np.full(config.dim, config.mu), config.s**2,
                                              method, N, **options)
        return float(np.max(np.abs(np.asarray(law.var) - config.s**2)))


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
            row[f"{method}_var_err"] = exact_sampler_error(N, method, config)
            row[f"{method}_var_err_mc"], row["var_se"] = sampler_error(rng, N, method, config)
        rows.append(row)
    Ns = np.array(config.Ns, float)
    rates = {"N": "fitted rate", "marginal_err": _slope(Ns, [r["marginal_err"] for r in rows])}
    for method in ("ddpm_ancestral", "euler_maruyama"):
        rates[f"{method}_var_err"] = _slope(Ns, [r[f"{method}_var_err"] for r in rows])
    columns = ["N", "marginal_err", "ddpm_ancestral_var_err", "euler_maruyama_var_err",
               "ddpm_ancestral_var_err_mc", "euler_maruyama_var_err_mc", "var_se"]
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
    for k, method in enumerate(("ddpm_ancestral", "euler_maruyama")):
        axes[1].loglog(Ns, [r[f"{method}_var_err"] for r in rows], "o-", color=f"C{k}",
                       label=f"{method} (exact law), slope {rates[f'{method}_var_err']:.2f}")
        if all(f"{method}_var_err_mc" in r for r in rows):
            axes[1].plot(Ns, [r[f"{method}_var_err_mc"] for r in rows], "x", color=f"C{k}",
                         label=f"{method}, simulated")
    axes[1].axhline(rows[0]["var_se"], color="k", ls=":",
                    label="simulation's Monte Carlo standard error")
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
