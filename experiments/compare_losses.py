r"""Loss parameterizations: the same network trained with each loss for the same number of steps.

The residual MLP is trained on the seeds' Gaussian pair (``d = 2`` by default) under the VP SDE
with each entry of ``LOSSES`` (``experiments/configs/compare_losses.py``: a name and the loss
fields it sets; each model trained by ``experiments.train`` in ``<workdir>/model_<i>``): eps /
x0 / v / score prediction, DSM with sigma^2, g^2 (likelihood) and no weighting, the DDPM simple and
ELBO-weighted losses, sliced score matching and Hutchinson explicit score matching. Each trained
score is evaluated on held-out data and against the exact mixture:

* ``heldout_dsm``: the sigma^2-weighted DSM loss of the implied score (a common yardstick, the
  same noise for every loss), with the exact score's value in the ``exact score`` row;
* ``nll_bpd``: probability-flow NLL of held-out data in bits/dim (exact divergence);
* ``sw2_em``, ``sw2_heun``: sliced W2 of Euler-Maruyama (200 steps) and Heun (50 steps)
  samples to exact samples;
* ``config``: the ``--config experiments/configs/compare_losses.py:<fields>`` argument with which
  ``python -m experiments.main`` trains the same model.

Writes ``losses.csv/md`` and ``losses.png``. Run: ``python -m experiments.compare_losses
--workdir runs/compare_losses``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from experiments import cli, reporting, sample_quality, train
from experiments.config_types import experiment_config
from experiments.configs import base
from experiments.configs.compare_losses import LOSSES


@dataclasses.dataclass(frozen=True)
class LossComparisonConfig:
    """The ``experiment`` section: losses: keys of ``LOSSES``; num_heldout, num_nll,
    num_samples: the evaluation; seed: of the evaluation."""

    losses: tuple[str, ...]
    num_heldout: int
    num_nll: int
    num_samples: int
    seed: int

    def __post_init__(self):
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"losses {unknown} are unknown; valid: {sorted(LOSSES)}")
        for name in ("num_heldout", "num_nll", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def loss_fields(name: str) -> dict:
    """The dotted config fields of loss ``name`` (every loss field not given is the base's)."""
    default = base.get_base_config().loss
    fields = {"weighting": default.weighting, "divergence": default.divergence, **LOSSES[name]}
    return {f"loss.{k}": v for k, v in fields.items()}


def evaluate(rng, sde, gmm, score_fn, exp, heldout):
    key_dsm, key_nll, key_s = jax.random.split(rng, 3)
    dsm = sde_lib.get_loss_fn(sde, sde_lib.LossConfig(name="dsm", weighting="sigma2",
                                                      parameterization="score"))
    out = {"heldout_dsm": float(jnp.mean(dsm(key_dsm, score_fn, heldout)))}
    logp, _ = sde_lib.log_likelihood(key_nll, sde, score_fn, heldout[:exp.num_nll],
                                     divergence="exact")
    out["nll_bpd"] = float(-jnp.mean(logp) / (gmm.dim * math.log(2)))
    exact = np.asarray(gmm.sample(jax.random.fold_in(key_s, 1), exp.num_samples))
    for name, method, steps in (("sw2_em", "euler_maruyama", 200), ("sw2_heun", "pf_ode_heun",
                                                                    50)):
        x, _ = jax.jit(lambda k, m=method, n=steps: sde_lib.sample(
            k, sde, score_fn, (exp.num_samples, gmm.dim), method=m, num_steps=n))(key_s)
        x = np.asarray(x)
        out[name] = (sample_quality.sliced_wasserstein(x, exact, key_s)
                     if np.all(np.isfinite(x)) else math.inf)
    return out


def run(config, workdir: str) -> dict[str, str]:
    """Trains (or reloads) one model per loss of ``config.experiment.losses`` and evaluates each;
    returns the paths written."""
    exp = experiment_config(LossComparisonConfig, config)
    configs = {name: base.override(config, loss_fields(name)) for name in exp.losses}
    for c in configs.values():  # every loss checked before anything trains
        train.validate_config(c)
    key_eval = jax.random.key(exp.seed)
    rows = []
    for i, (name, c) in enumerate(configs.items()):
        trained = train.train_and_evaluate(c, os.path.join(workdir, f"model_{i}"))
        sde, gmm = trained["sde"], trained["dataset"].gmm
        if not rows:  # the exact score's row, on the same held-out data
            heldout = gmm.sample(jax.random.fold_in(key_eval, 1),
                                 exp.num_heldout).astype(jnp.float32)
            rows.append({"loss": "exact score", "config": "",
                         **evaluate(key_eval, sde, gmm, gmm.score_fn(sde), exp, heldout)})
        shortcut = ",".join(f"{k}={v}" for k, v in loss_fields(name).items())
        rows.append({"loss": name, "config": shortcut,
                     **evaluate(key_eval, sde, gmm, trained["score_fn"], exp, heldout)})
    columns = ["loss", "heldout_dsm", "nll_bpd", "sw2_em", "sw2_heun", "config"]
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
    cli.run_main(run, "compare_losses", argv)


if __name__ == "__main__":
    main()
