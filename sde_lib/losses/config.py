r"""One entry point: ``get_loss_fn(sde, config)`` builds ``loss_fn(rng, model_fn, x0) -> (B,)``.

Names are turned into functions here and only here. The returned function draws its own
randomness from ``rng`` as ``rng_t, rng_z, rng_v = jax.random.split(rng, 3)`` (time or index,
noise, probes), computes the per-example loss, multiplies by the time sampler's importance weight
and, with ``reduce_mean``, replaces the sum over data entries by their mean. The caller averages
over the batch.

Every per-example loss is ``1/2 sum`` over data entries of a weighted squared error (the ``1/2``
of a Gaussian log-density; weights never carry it). ``reduce_mean=True`` replaces ``1/2 sum`` by
the mean, so both settings equal score_sde's ``reduce_op`` (``torch.mean`` or
``0.5 * torch.sum``) for every loss it has, and ``reduce_mean=True`` with the simple eps loss is Ho
et al.'s code (``mean_flat``); Ho et al.'s Eq. 14 ``sum ||eps - eps_theta||^2`` is twice the
``reduce_mean=False`` value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from sde_lib._validation import (
    check_finite,
    check_floating,
    check_positive,
    check_rng,
    check_sde,
)
from sde_lib.ddpm import VARIANCES, DDPMChain
from sde_lib.divergence import DIVERGENCES, PROBES
from sde_lib.losses.denoising import check_batch, ddpm_loss, denoising_loss, dsm_loss
from sde_lib.losses.score_matching import (
    explicit_score_matching,
    noise_conditional_loss,
    sample_probes,
    sliced_score_matching,
)
from sde_lib.losses.time_sampling import TIME_SAMPLERS, check_time_eps, sample_index_uniform
from sde_lib.losses.weighting import (
    CONTINUOUS_TARGET_WEIGHTINGS,
    DISCRETE_TARGET_WEIGHTINGS,
    SCORE_WEIGHTINGS,
)
from sde_lib.parameterization import get_parameterization


@dataclasses.dataclass(frozen=True)
class LossFn:
    """``loss_fn(rng, model_fn, x0) -> (B,)``, in two parts: ``draw(rng, x0)``, the loss's
    randomness (time or index, noise, probes: a dict of arrays with the batch on axis 0) and
    ``evaluate(model_fn, x0, draws) -> (B,)``, the per-example losses with one call of
    ``model_fn`` on the whole batch; ``loss_fn(rng, model_fn, x0) = evaluate(model_fn, x0,
    draw(rng, x0))``.

    The split lets a trainer draw per block of examples (``jax.vmap(draw)`` over the blocks'
    keys, so the draws do not depend on how the batch is split across devices) and evaluate the
    network once on the whole batch, outside the vmap (``trainer.example_losses``).
    """

    draw: Callable[[jax.Array, jax.Array], dict]
    evaluate: Callable[[Callable, jax.Array, dict], jax.Array]

    def __call__(self, rng, model_fn, x0):
        return self.evaluate(model_fn, x0, self.draw(rng, x0))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The loss section of a config.

    Attributes:
      name: one of ``LOSSES``.
      weighting: ``None`` for the loss's default; score-space (``"sigma2"`` default,
        ``"likelihood"``, ``"none"``) for dsm / ssm / ssm_vr / esm, target-space (``"simple"``
        default, ``"elbo"``) for eps / x0 / ddpm_eps / ddpm_x0.
      parameterization: what the network predicts: ``"eps"``, ``"score"``, ``"x0"``, ``"v"``.
      eps: smallest training time, ``t ~ U(eps, T)`` (continuous losses).
      time_sampling: ``"uniform"`` or ``"importance"`` (density ``g^2 / sigma^2``).
      num_projections: probes per example (ssm, ssm_vr, Hutchinson esm).
      projection: probe law for ssm / ssm_vr: ``"gaussian"``, ``"rademacher"``, ``"sphere"``.
      divergence: esm trace: ``"exact"`` or a Hutchinson probe law from ``projection``'s list.
      variance: reverse variance of the DDPM ELBO weight: ``"beta"`` or ``"beta_tilde"``.
      reduce_mean: the mean over data entries instead of ``1/2`` their sum (a factor ``2 / D``;
        score_sde's ``reduce_mean``).
    """

    name: str = "dsm"
    weighting: str | None = None
    parameterization: str = "eps"
    eps: float = 1e-5
    time_sampling: str = "uniform"
    num_projections: int = 1
    projection: str = "rademacher"
    divergence: str = "exact"
    variance: str = "beta_tilde"
    reduce_mean: bool = False


def _lookup(field: str, value, table: Mapping):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{field} must be one of {sorted(table)}, got {value!r}") from None


def _continuous(sde, cfg: LossConfig, per_example: Callable,
                probes: Callable | None = None) -> LossFn:
    """``per_example(model_fn, x0, z, t, v)`` with time sampling, noise and, when ``probes``
    is given, the probes ``v = probes(rng_v, x0)`` ``(num, B, *D)`` (``None`` otherwise)."""
    eps = check_time_eps(sde, cfg.eps)
    sampler = _lookup("time_sampling", cfg.time_sampling, TIME_SAMPLERS)

    def draw(rng, x0):
        check_batch(x0)
        x0 = jnp.asarray(x0)
        rng_t, rng_z, rng_v = jax.random.split(rng, 3)
        t, w = sampler(rng_t, sde, x0.shape[0], eps, dtype=x0.dtype)
        draws = {"t": t, "w": jnp.broadcast_to(w, t.shape),
                 "z": jax.random.normal(rng_z, x0.shape, x0.dtype)}
        v = None if probes is None else probes(rng_v, x0)
        if v is not None:
            draws["v"] = jnp.moveaxis(v, 0, 1)  # batch first
        return draws

    def evaluate(model_fn, x0, d):
        v = jnp.moveaxis(d["v"], 1, 0) if "v" in d else None
        return d["w"] * per_example(model_fn, jnp.asarray(x0), d["z"], d["t"], v)

    return LossFn(draw, evaluate)


def _build_dsm(sde, cfg):
    weighting = _lookup("weighting", cfg.weighting or "sigma2", SCORE_WEIGHTINGS)
    param = get_parameterization(cfg.parameterization)
    return _continuous(sde, cfg, lambda f, x0, z, t, v: dsm_loss(
        f, x0, z, t, sde=sde, parameterization=param, weighting=weighting))


def _build_regression(target):
    def build(sde, cfg):
        weighting = _lookup("weighting", cfg.weighting or "simple",
                            CONTINUOUS_TARGET_WEIGHTINGS[target])
        param = get_parameterization(cfg.parameterization)
        return _continuous(sde, cfg, lambda f, x0, z, t, v: denoising_loss(
            f, x0, z, t, sde=sde, parameterization=param, target=target, weighting=weighting))
    return build


def _build_ddpm(target):
    def build(sde, cfg):
        weighting = _lookup("weighting", cfg.weighting or "simple",
                            DISCRETE_TARGET_WEIGHTINGS[target])
        if cfg.variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {cfg.variance!r}")
        if cfg.time_sampling != "uniform":
            raise ValueError(f"time_sampling must be 'uniform' for loss {cfg.name!r} (its index is "
                             f"i ~ U{{0..N-1}}), got {cfg.time_sampling!r}")
        if not sde.has_chain:
            raise ValueError(f"loss {cfg.name!r} needs an SDE with a DDPM chain (has_chain: "
                             f"VPSDE, CosineVPSDE, DiscreteVPSDE), "
                             f"got {type(sde).__name__}")
        param = get_parameterization(cfg.parameterization)
        chain = DDPMChain.from_sde(sde)
        weighting = functools.partial(weighting, variance=cfg.variance)

        def draw(rng, x0):
            check_batch(x0)
            x0 = jnp.asarray(x0)
            rng_i, rng_z = jax.random.split(rng)
            return {"i": sample_index_uniform(rng_i, chain.N, x0.shape[0]),
                    "z": jax.random.normal(rng_z, x0.shape, x0.dtype)}

        def evaluate(model_fn, x0, d):
            return ddpm_loss(model_fn, jnp.asarray(x0), d["z"], d["i"], sde=sde, chain=chain,
                             parameterization=param, target=target, weighting=weighting)

        return LossFn(draw, evaluate)
    return build


def _build_score_matching(kind):
    def build(sde, cfg):
        weighting = _lookup("weighting", cfg.weighting or "sigma2", SCORE_WEIGHTINGS)
        param = get_parameterization(cfg.parameterization)
        probe_kind = cfg.divergence if kind == "esm" else cfg.projection
        allowed = DIVERGENCES if kind == "esm" else PROBES
        if probe_kind not in allowed:
            field = "divergence" if kind == "esm" else "projection"
            raise ValueError(f"{field} must be one of {allowed}, got {probe_kind!r}")
        num = cfg.num_projections
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num_projections must be an integer >= 1, got {num!r}")

        def per_example(model_fn, x0, z, t, v):
            if probe_kind == "exact":
                objective = explicit_score_matching
            else:
                objective = (functools.partial(explicit_score_matching, probes=v) if kind == "esm"
                             else functools.partial(sliced_score_matching, probes=v,
                                                    variance_reduction=kind == "ssm_vr"))
            return noise_conditional_loss(objective, model_fn, x0, z, t, sde=sde,
                                          parameterization=param, weighting=weighting)

        probes = None if probe_kind == "exact" else (
            lambda rng, x0: sample_probes(rng, x0.shape, num, probe_kind, x0.dtype))
        return _continuous(sde, cfg, per_example, probes)
    return build


LOSSES: dict[str, Callable] = {
    "dsm": _build_dsm,
    "eps": _build_regression("eps"),
    "x0": _build_regression("x0"),
    "ddpm_eps": _build_ddpm("eps"),
    "ddpm_x0": _build_ddpm("x0"),
    "ssm": _build_score_matching("ssm"),
    "ssm_vr": _build_score_matching("ssm_vr"),
    "esm": _build_score_matching("esm"),
}


def as_loss_config(config) -> LossConfig:
    """A ``LossConfig`` from a ``LossConfig`` or a mapping (e.g. a ConfigDict section)."""
    if isinstance(config, LossConfig):
        return config
    if not isinstance(config, Mapping) and hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a LossConfig or a mapping, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown loss config keys {unknown}; valid keys are {sorted(fields)}")
    return LossConfig(**config)


def get_loss_fn(sde, config) -> LossFn:
    r"""Builds ``loss_fn(rng, model_fn, x0) -> (B,)`` per-example losses from a config section.

    Args:
      sde: a linear SDE of sde_lib (VP-type for ``ddpm_*``, whose chain is
        ``DDPMChain.from_sde(sde)``).
      config: a ``LossConfig`` or a mapping with its fields.

    Returns:
      ``loss_fn(rng, model_fn, x0)`` with ``model_fn(x, t) -> (B, *D)`` the network output in
      ``config.parameterization`` and ``x0`` ``(B, *D)``; pure, jit-able. A ``LossFn``: also
      ``loss_fn.draw(rng, x0)`` and ``loss_fn.evaluate(model_fn, x0, draws)``.

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib.
      ValueError: an unknown name, weighting, parameterization, time sampling, probe law,
        variance or config key, or ``eps`` not in ``(0, T)``; listed with the valid values.
        The returned ``loss_fn`` (its ``draw``) raises TypeError for an ``rng`` that is not a
        ``jax.random`` key or an ``x0`` that is not floating-point (also when traced), and
        ValueError for a concrete ``x0`` holding NaN or inf (a traced one is a ``checkify``
        check within ``debug_checks()``).
    """
    check_sde("sde", sde)
    cfg = as_loss_config(config)
    build = _lookup("name", cfg.name, LOSSES)
    if not isinstance(cfg.reduce_mean, bool):
        raise ValueError(f"reduce_mean must be a bool, got {cfg.reduce_mean!r}")
    check_positive("eps", cfg.eps)
    built = build(sde, cfg)

    def draw(rng, x0):
        check_rng("rng", rng)
        return built.draw(rng, check_finite("x0", check_floating("x0", x0)))

    if not cfg.reduce_mean:
        return LossFn(draw, built.evaluate)

    def evaluate(model_fn, x0, draws):
        x0 = jnp.asarray(x0)
        return built.evaluate(model_fn, x0, draws) * (2.0 / math.prod(x0.shape[1:]))

    return LossFn(draw, evaluate)
