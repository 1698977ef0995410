r"""Abstract SDEs: forward SDE, marginals, prior, Euler-Maruyama discretization and reverse time.

The forward SDE is (Song et al. 2021, Eq. 5)

.. math:: dx = f(x, t)\,dt + g(t)\,dW,

its time reversal (Anderson 1982; Song et al. 2021, Eq. 6) is

.. math:: dx = [f(x, t) - g(t)^2 \nabla_x \log p_t(x)]\,dt + g(t)\,d\bar W,

and the probability-flow ODE with the same marginals (Song et al. 2021, Eq. 13) is

.. math:: dx = [f(x, t) - \tfrac12 g(t)^2 \nabla_x \log p_t(x)]\,dt.

``discretize`` and ``reverse`` are written once here; concrete SDEs only say what differs.
"""

from __future__ import annotations

import abc
import copy
import functools
import inspect
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff, sum_except_batch
from sde_lib._validation import check_num_steps, check_positive, check_rng, check_times

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class AbstractSDE(abc.ABC):
    """An SDE ``dx = f(x, t) dt + g(t) dW`` on ``[0, T]`` with ``N`` discretization steps.

    SDEs are values: immutable once built, equal and hashable by class and parameters, and
    registered as static pytrees, so an SDE can be a ``jax.jit`` argument (static, no leaves) and
    two equal SDEs share compilations.

    Shapes: ``x`` is ``(B, *D)``, ``t`` is ``(B,)``; ``g`` and standard deviations are ``(B,)``.

    ``has_chain`` says whether the SDE has a DDPM chain: ``discrete_betas`` and a ``discretize``
    that is the chain's step (the VP SDEs); the DDPM losses, the ELBO and the chain grids of the
    samplers read it.
    """

    has_chain: bool = False

    def __init_subclass__(cls, **kwargs):
        """Freezes every instance when its outermost ``__init__`` returns (SDEs are values)."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            init = cls.__dict__["__init__"]

            @functools.wraps(init)
            def frozen_init(self, *args, **kw):
                init(self, *args, **kw)
                if type(self).__init__ is frozen_init:  # the outermost __init__ has returned
                    object.__setattr__(self, "_frozen", True)

            cls.__init__ = frozen_init
        jax.tree_util.register_static(cls)

    def __init__(self, N: int, T: float = 1.0):
        self._N = check_num_steps("N", N)
        self._T = check_positive("T", T)

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable: build a new one (or "
                                 f"with_num_steps) instead of setting {name!r}")
        object.__setattr__(self, name, value)

    def _value(self) -> tuple:
        """What the SDE is: its class and its attributes (arrays by shape and bytes)."""
        def hashable(v):
            if isinstance(v, np.ndarray | jax.Array):
                a = np.asarray(v)
                return (a.shape, str(a.dtype), a.tobytes())
            return v
        return (type(self),) + tuple(sorted((k, hashable(v)) for k, v in vars(self).items()
                                            if k != "_frozen"))

    def __eq__(self, other):
        return type(self) is type(other) and self._value() == other._value()

    def _repr_args(self) -> dict:
        """The constructor arguments that rebuild this SDE, by name: each parameter of
        ``__init__`` read from the attribute of the same name (``N`` and ``T`` included)."""
        params = inspect.signature(type(self).__init__).parameters.values()
        return {p.name: getattr(self, p.name) for p in params
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and hasattr(self, p.name)}

    def __repr__(self) -> str:
        """``VPSDE(beta_min=0.1, beta_max=20.0, N=1000, T=1.0)``: with the ``sde_lib`` names in
        scope it evaluates to an equal SDE."""
        args = ", ".join(f"{k}={_repr_value(v)}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def __hash__(self):
        return hash(self._value())

    @property
    def T(self) -> float:
        """End time of the forward SDE."""
        return self._T

    @property
    def N(self) -> int:
        """Number of discretization steps; the step of ``discretize`` is ``T / N``."""
        return self._N

    @abc.abstractmethod
    def sde(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Returns the drift ``f(x, t)`` ``(B, *D)`` and the diffusion ``g(t)`` ``(B,)``."""

    @abc.abstractmethod
    def marginal_prob(self, x0: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Returns ``mean (B, *D)`` and ``std (B,)`` of ``p_{0t}(x_t | x_0) = N(mean, std^2 I)``."""

    @abc.abstractmethod
    def prior_sampling(self, rng: jax.Array, shape: Sequence[int]) -> jax.Array:
        """Draws a sample of shape ``shape`` from the prior ``p_T``."""

    @abc.abstractmethod
    def prior_logp(self, z: ArrayLike) -> jax.Array:
        """Log-density of the prior at ``z`` ``(B, *D)``, summed over data axes: ``(B,)`` nats."""

    def discretize(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        r"""One step of size ``dt = T / N``: ``x_{i+1} = x_i + f + G z`` with ``z ~ N(0, I)``.

        The default is Euler-Maruyama, ``f = f(x, t) dt`` and ``G = g(t) \sqrt{dt}``
        (Song et al. 2021, Appendix E). SDEs with an exact discrete chain override this.

        Returns:
          ``f`` of shape ``(B, *D)`` and ``G`` of shape ``(B,)``.
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, check_times("t", t, self.T))
        return drift * dt, diffusion * math.sqrt(dt)

    def with_num_steps(self, N: int) -> AbstractSDE:
        """A copy of this SDE with ``N`` discretization steps (the same continuous process)."""
        new = copy.copy(self)
        object.__setattr__(new, "_N", check_num_steps("N", N))
        return new

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """Reverse-time SDE (Anderson 1982) or probability-flow ODE driven by ``score_fn``."""
        return ReverseSDE(self, score_fn, probability_flow)


def _repr_value(v) -> str:
    """``repr`` of a constructor argument, numpy scalars as Python numbers."""
    return repr(v.item() if isinstance(v, np.generic) else v)


class ReverseSDE:
    r"""Reverse-time process of ``forward`` driven by ``score_fn(x, t)``.

    Time runs backwards from ``T``; ``sde`` returns the reverse drift such that
    ``x_{t - dt} = x_t - drift dt + diffusion sqrt(dt) z``:

    * reverse SDE (Song et al. 2021, Eq. 6): drift ``f - g^2 s``, diffusion ``g``;
    * probability-flow ODE (Song et al. 2021, Eq. 13): drift ``f - g^2 s / 2``, diffusion ``0``.
    """

    def __init__(self, forward: AbstractSDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)

    def __repr__(self) -> str:
        name = getattr(self.score_fn, "__qualname__", type(self.score_fn).__name__)
        return (f"ReverseSDE({self.forward!r}, score_fn=<{name}>, "
                f"probability_flow={self.probability_flow})")

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def _score_scale(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Reverse drift ``(B, *D)`` and diffusion ``(B,)`` at ``(x, t)``."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = drift - batch_coeff(diffusion**2, score) * score * self._score_scale
        if self.probability_flow:
            diffusion = jnp.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        r"""Reverse step from ``discretize`` of the forward SDE (Song et al. 2021, Eq. 46).

        ``x_{i-1} = x_i - f + G^2 s + G z``: returns ``rev_f = f - G^2 s`` (``G^2 s / 2`` for the
        probability flow) and ``rev_G = G`` (``0`` for the probability flow).
        """
        f, G = self.forward.discretize(x, t)
        score = self.score_fn(x, t)
        rev_f = f - batch_coeff(G**2, score) * score * self._score_scale
        rev_G = jnp.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class LinearSDE(AbstractSDE):
    r"""An SDE with linear drift ``f(x, t) = f(t) x``, diffusion ``g(t)`` and Gaussian prior.

    Its transition from ``x_0`` is ``N(alpha_t x_0, sigma_t^2 I)`` with
    ``alpha_t = exp(\int_0^t f)`` and ``sigma_t^2 = \int_0^t alpha_t^2 / alpha_s^2 g(s)^2 ds``.
    Subclasses give ``drift_coeff``, ``diffusion_coeff``, ``marginal_coeffs`` and ``prior_std``;
    everything else (and the Gaussian-mixture oracle, the parameterizations) is built on these.
    """

    @abc.abstractmethod
    def drift_coeff(self, t: ArrayLike) -> jax.Array:
        """Scalar ``f(t)`` with ``f(x, t) = f(t) x``; same shape as ``t``."""

    @abc.abstractmethod
    def diffusion_coeff(self, t: ArrayLike) -> jax.Array:
        """``g(t)``; same shape as ``t``."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """``(alpha_t, sigma_t)``: mean coefficient and std of ``p_{0t}``; each shaped as ``t``."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``p_T = N(0, prior_std^2 I)``."""

    def sde(self, x: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        x = jnp.asarray(x)
        return batch_coeff(self.drift_coeff(t), x) * x, self.diffusion_coeff(t)

    def marginal_prob(self, x0: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """``alpha_t x0`` and ``sigma_t``; a concrete ``t`` outside ``[0, T]`` is a ValueError
        (under ``jit`` it is not checked: the coefficients extrapolate)."""
        x0 = jnp.asarray(x0)
        alpha, sigma = self.marginal_coeffs(check_times("t", t, self.T))
        return batch_coeff(alpha, x0) * x0, sigma

    def prior_sampling(self, rng: jax.Array, shape: Sequence[int]) -> jax.Array:
        return self.prior_std * jax.random.normal(check_rng("rng", rng), tuple(shape))

    def prior_logp(self, z: ArrayLike) -> jax.Array:
        z = jnp.asarray(z)
        dim = math.prod(z.shape[1:])
        s2 = self.prior_std**2
        return -0.5 * dim * math.log(2 * math.pi * s2) - sum_except_batch(z**2) / (2 * s2)

    def time_to_index(self, t: ArrayLike) -> jax.Array:
        """Index ``i`` of the chain step whose time ``t_i = (i + 1) T / N`` is nearest ``t``.

        Returns an int32 array shaped as ``t``, clipped to ``0 .. N - 1``.
        """
        i = jnp.round(jnp.asarray(t) * self.N / self.T).astype(jnp.int32) - 1
        return jnp.clip(i, 0, self.N - 1)
