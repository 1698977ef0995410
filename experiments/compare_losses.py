r"""Loss parameterizations: the same network trained with each loss for the same number of steps.

The residual MLP is trained on the seeds' Gaussian pair (``d = 2`` by default) under the VP SDE
with each entry of ``LOSSES`` (a name and its ``sde_lib.LossConfig``): eps / x0 / v / score
prediction, DSM with sigma^2, g^2 (likelihood) and no weighting, the DDPM simple and
ELBO-weighted losses, sliced score matching and Hutchinson explicit score matching. Each trained
score is evaluated on held-out data and against the exact mixture:

* ``heldout_dsm``: the sigma^2-weighted DSM loss of the implied score (a common yardstick, the
  same noise for every loss), with the exact score's value in the ``exact score`` row;
* ``nll_bpd``: probability-flow NLL of held-out data in bits/dim (exact divergence);
* ``sw2_em``, ``sw2_heun``: sliced W2 of Euler-Maruyama (200 steps) and Heun (50 steps)
  samples to exact samples;
* ``train_s``: training time (compilation included).

Writes ``losses.csv/md`` and ``losses.png``. Run: ``python -m experiments.compare_losses
--workdir runs/compare_losses``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from experiments import cli, fit, reporting, sample_quality

L = sde_lib.LossConfig
LOSSES = {
    "eps prediction (eps loss)": L(name="eps", parameterization="eps"),
    "x0 prediction (x0 loss)": L(name="x0", parameterization="x0"),
    "v prediction (eps loss)": L(name="eps", parameterization="v"),
    "score prediction (DSM sigma^2)": L(name="dsm", weighting="sigma2", parameterization="score"),
    "DSM g^2 (likelihood)": L(name="dsm", weighting="likelihood", parameterization="score"),
    "DSM unweighted": L(name="dsm", weighting="none", parameterization="score"),
    "DDPM simple": L(name="ddpm_eps", weighting="simple", parameterization="eps"),
    "DDPM ELBO": L(name="ddpm_eps", weighting="elbo", parameterization="eps"),
    "sliced score matching": L(name="ssm", parameterization="score"),
    "ESM Hutchinson": L(name="esm", divergence="rademacher", parameterization="score"),
}


@dataclasses.dataclass(frozen=True)
class LossComparisonConfig:
    """losses: keys of ``LOSSES``; dim: data dimension; the rest: training and evaluation."""

    losses: tuple[str, ...] = tuple(LOSSES)
    dim: int = 2
    train_steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 2e-3
    hidden: int = 128
    num_blocks: int = 3
    num_heldout: int = 2000
    num_nll: int = 200
    num_samples: int = 2000
    seed: int = 0

    def __post_init__(self):
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"losses {unknown} are unknown; valid: {sorted(LOSSES)}")


def evaluate(rng, sde, gmm, score_fn, config, heldout):
    key_dsm, key_nll, key_s = jax.random.split(rng, 3)
    dsm = sde_lib.get_loss_fn(sde, L(name="dsm", weighting="sigma2", parameterization="score"))
    out = {"heldout_dsm": float(jnp.mean(dsm(key_dsm, score_fn, heldout)))}
    logp, _ = sde_lib.log_likelihood(key_nll, sde, score_fn, heldout[:config.num_nll],
                                     divergence="exact")
    out["nll_bpd"] = float(-jnp.mean(logp) / (config.dim * math.log(2)))
    exact = np.asarray(gmm.sample(jax.random.fold_in(key_s, 1), config.num_samples))
    for name, method, steps in (("sw2_em", "euler_maruyama", 200), ("sw2_heun", "pf_ode_heun",
                                                                    50)):
        x, _ = jax.jit(lambda k, m=method, n=steps: sde_lib.sample(
            k, sde, score_fn, (config.num_samples, config.dim), method=m, num_steps=n))(key_s)
        x = np.asarray(x)
        out[name] = (sample_quality.sliced_wasserstein(x, exact, key_s)
                     if np.all(np.isfinite(x)) else math.inf)
    return out


def run(config: LossComparisonConfig, workdir: str) -> dict[str, str]:
    sde = sde_lib.VPSDE()
    key_data, key_train, key_eval = jax.random.split(jax.random.key(config.seed), 3)
    gmm = sde_lib.gaussian_pair(key_data, config.dim)
    heldout = gmm.sample(jax.random.fold_in(key_data, 1), config.num_heldout).astype(jnp.float32)
    rows = [{"loss": "exact score", "train_s": 0.0,
             **evaluate(key_eval, sde, gmm, gmm.score_fn(sde), config, heldout)}]
    for name in config.losses:
        score_fn, result = fit.fit_mixture_score(
            key_train, sde, gmm, train_steps=config.train_steps, batch_size=config.batch_size,
            learning_rate=config.learning_rate, hidden=config.hidden,
            num_blocks=config.num_blocks, loss_config=LOSSES[name])
        rows.append({"loss": name, "train_s": result.seconds,
                     **evaluate(key_eval, sde, gmm, score_fn, config, heldout)})
    columns = ["loss", "heldout_dsm", "nll_bpd", "sw2_em", "sw2_heun", "train_s"]
    paths = reporting.write_table(workdir, "losses", rows, columns)
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5))
    labels = [r["loss"] for r in rows]
    y = np.arange(len(rows))
    axes[0].barh(y, [r["nll_bpd"] for r in rows])
    axes[0].set(yticks=y, yticklabels=labels, xlabel="held-out NLL (bits/dim)")
    axes[1].barh(y - 0.2, [min(r["sw2_em"], 10) for r in rows], 0.4, label="Euler-Maruyama 200")
    axes[1].barh(y + 0.2, [min(r["sw2_heun"], 10) for r in rows], 0.4, label="Heun 50 steps")
    axes[1].set(yticks=y, yticklabels=[], xscale="log", xlabel="sliced W2 to exact samples")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.invert_yaxis()
    fig.tight_layout()
    paths.update(reporting.save_figure(fig, workdir, "losses.png"))
    return paths


def main(argv=None):
    return cli.run_main(LossComparisonConfig, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
