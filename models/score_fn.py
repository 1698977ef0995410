r"""From a network and its parameters to ``model_fn(x, t)`` (what the losses take) and to
``score_fn(x, t)`` (what samplers and likelihoods take).

The score uses exactly the conversion of the losses (``sde_lib.losses.get_model_score_fn``):
``score = Parameterization.to_score(model(x, t), x, alpha_t, sigma_t)`` with
``(alpha_t, sigma_t) = sde.marginal_coeffs(t)``, e.g. ``-eps / sigma_t`` for an eps network and
``-(x - alpha_t x0) / sigma_t^2`` for an x0 network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax

from models import dropout, layers
from models._checks import check_params
from sde_lib._validation import check_rng, check_sde
from sde_lib.losses import get_model_score_fn
from sde_lib.parameterization import Parameterization, get_parameterization

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def get_model_fn(model: nn.Module, params, train: bool = False,
                 rng: jax.Array | None = None, example_ids: jax.Array | None = None) -> ModelFn:
    """``model_fn(x (B, *D), t (B,)) -> (B, *D)``, the raw network output.

    Args:
      model: a Flax module called as ``model.apply({"params": params}, x, t, train=train)``.
      params: the ``"params"`` collection.
      train: enables dropout; then ``rng`` is the dropout key.
      rng: a ``jax.random`` key, required when ``train`` is true.
      example_ids: ``None`` or an integer array ``(B,)``, an id per example of the batches
        ``model_fn`` is called on: the dropout mask of example ``b`` then comes from ``rng``
        and ``example_ids[b]`` alone (``models.dropout``), whatever else is in the batch.

    Raises:
      ValueError: ``train`` not a bool, ``train=True`` without ``rng``; the returned
        ``model_fn``, at its first call for a data shape (also when traced): ``params`` whose
        leaves or shapes differ from what ``model.init`` gives (e.g. another model's), naming
        the first differing leaf.
      TypeError: ``rng`` given and not a ``jax.random`` key.
    """
    if not isinstance(train, bool):
        raise ValueError(f"train must be a bool, got {train!r}")
    if train and rng is None:
        raise ValueError("rng (the dropout key) is required when train=True")
    if rng is not None:
        check_rng("rng", rng)
    rngs = {"dropout": rng} if train else None

    def model_fn(x, t):
        check_params(model, params, x, t)
        with dropout.example_ids(example_ids if train else None):
            return model.apply({"params": params}, x, t, train=train, rngs=rngs)

    return model_fn


@dataclasses.dataclass(frozen=True)
class _NetworkScore:
    """``score(params, rng, x, t)`` of a network: hashable by value (model, SDE object,
    parameterization, train, loop_vjp), so equal networks share a compilation whatever their
    params."""

    model: nn.Module
    sde: object
    parameterization: Parameterization
    train: bool
    loop_vjp: bool = False

    def __call__(self, params, rng, x, t):
        model_fn = get_model_fn(self.model, params, self.train, rng)
        with layers.loop_vjp(self.loop_vjp):
            return get_model_score_fn(model_fn, self.sde, self.parameterization)(x, t)


def with_loop_vjp(score_fn: ModelFn) -> ModelFn:
    """A network's ``score_fn`` (of ``get_score_fn``, same parameters) whose convolutions have
    the VJP that XLA:CPU runs fast inside loops (``models.layers``: ``loop_vjp``), for
    gradients of the score at every step of a sampler (DPS, PiGDM); it cannot be
    differentiated in forward mode (``jax.jvp``, the likelihood's divergence).

    Raises:
      TypeError: ``score_fn`` that ``get_score_fn`` did not make.
    """
    if not (isinstance(score_fn, jax.tree_util.Partial)
            and isinstance(score_fn.func, _NetworkScore)):
        raise TypeError(f"score_fn must be a network's score of models.get_score_fn, got "
                        f"{score_fn!r}")
    return jax.tree_util.Partial(dataclasses.replace(score_fn.func, loop_vjp=True),
                                 *score_fn.args)


def get_score_fn(sde, model: nn.Module, params, parameterization: str | Parameterization = "eps",
                 train: bool = False, rng: jax.Array | None = None) -> ModelFn:
    """``score_fn(x, t) -> (B, *D)``, the score ``grad_x log p_t(x)`` the network implies.

    The returned function is a pytree (``jax.tree_util.Partial``) whose leaves are ``params``
    (and ``rng``): ``sde_lib.log_likelihood`` and ``ddpm_negative_elbo`` take it as a traced
    argument, so a new ``get_score_fn`` over the same network, with the same or new parameters,
    reuses their compilation; ``jax.jit`` of a function taking ``score_fn`` as an argument too.

    Args:
      sde: a linear SDE of sde_lib (``sde.marginal_coeffs(t)`` gives ``alpha_t, sigma_t``).
      model, params, train, rng: as in ``get_model_fn``.
      parameterization: what the network predicts: ``"eps"``, ``"x0"``, ``"v"``, ``"score"``
        (or a ``Parameterization``).

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib; as ``get_model_fn``.
      ValueError: an unknown parameterization; as ``get_model_fn`` (the returned ``score_fn``
        refuses params that do not fit the model).
    """
    check_sde("sde", sde)
    if not isinstance(parameterization, Parameterization):
        parameterization = get_parameterization(parameterization)
    get_model_fn(model, params, train, rng)  # checks train and rng now, not when traced
    return jax.tree_util.Partial(_NetworkScore(model, sde, parameterization, train), params, rng)
