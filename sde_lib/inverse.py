r"""Linear inverse problems ``y = A x_0 + sigma_y z``: sampling ``p(x_0 | y)`` with a prior score.

The conditional score is ``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``; the
second term is intractable and each method approximates it, all through the sampler driver of
``sde_lib.sampling`` (any fixed-step method; the guided ones also the adaptive ones):

* ``"projection"`` (Song et al. 2021, Appendix I.2, imputation; Song et al. 2022, Eq. 8): after
  every step to ``t'``, replace ``A x`` by a sample of ``y_{t'} = alpha_{t'} y + sigma_{t'} A z``:
  ``x <- x + A^+ (y_{t'} - A x)``. For ``sigma_y = 0``; the samples satisfy ``A x = y`` exactly.
* ``"dps"`` (Chung et al. 2023, Eq. 16): ``p_t(y | x) ~ N(y; A \hat x_0(x), sigma_y^2 I)`` with the
  Tweedie mean ``\hat x_0`` (gradient through the score network); ``scale`` multiplies the term
  (``scale = 1`` is the Gaussian likelihood itself).
* ``"dps"`` with ``normalize=True``: Chung et al.'s step as they run it (their Algorithm 1 with
  the released code's norm): after each step of the unguided sampler from ``x_k``,
  ``x_{k+1} <- x_{k+1} - zeta' grad_{x_k} ||y - A \hat x_0(x_k)||`` (``zeta' = scale``;
  ``grad ||r|| = -J^T A^T r / ||r||``). The move has length about ``zeta' ||J^T A^T r|| / ||r||``
  per step whatever the residual, so it neither grows as ``1 / sigma_y^2`` nor with a network's
  Tweedie errors at high noise (magnified by ``1 / alpha_t``); it ignores ``sigma_y`` and its
  strength is ``zeta'`` times the number of steps, so it is a heuristic whose ``zeta'`` is tuned
  per problem and step count (Chung et al.: 1000 DDPM steps). Not a score term:
  ``conditional_sample`` only, with a one-state fixed-step method.
* ``"tmpd"`` (Boys et al. 2023, Tweedie moment projection; Song et al. 2023, PiGDM, with the full
  covariance): ``p_t(y | x) ~ N(y; A \hat x_0, A C_t A^T + sigma_y^2 I)`` with the Tweedie
  covariance ``C_t = sigma_t^2 / alpha_t\, \partial \hat x_0 / \partial x`` held fixed in the
  gradient. Exact when the data are Gaussian (then ``p(x_0 | x_t)`` is Gaussian and ``C_t`` does
  not depend on ``x``); costs ``m`` Jacobian-vector products per call. A network's Jacobian need
  not be symmetric positive semidefinite: the symmetrized ``A C_t A^T`` is projected onto the
  positive semidefinite cone (negative eigenvalues set to 0), and ``S^{-1}`` is the
  pseudo-inverse of ``S = A C_t A^T + sigma_y^2 I`` (eigenvalues below ``1e-6`` of the largest
  dropped), so the observation covariance is never indefinite.
* ``"pigdm"`` (Song et al. 2023, PiGDM): the same with the scalar Tweedie covariance of
  unit-variance data, ``C_t = r_t^2 I``, ``r_t^2 = sigma_t^2 / (alpha_t^2 + sigma_t^2)``: no
  Jacobian-vector products, positive definite by construction; exact for data ``N(mu, I)``.

``A`` is ``(m, d)`` acting on flattened data ``d = prod(D)``; ``y`` is ``(m,)`` (one observation,
shared by the batch) or ``(B, m)``.

``dps`` and ``pigdm`` differentiate the score at every sampler step; with a convolutional
network on CPU, give them ``models.with_loop_vjp(score_fn)`` (docs/known_issues.md: XLA:CPU runs
a convolution's input gradient inside a loop 4-6x slower otherwise).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sde_lib._arrays import batch_coeff
from sde_lib._validation import check_rng, check_sde, shape_checked
from sde_lib.sampling.driver import build_sampler, sample, scan_steps
from sde_lib.sampling.multistep import Multistep
from sde_lib.sampling.registry import get_sampler

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
GUIDANCE = ("projection", "dps", "tmpd", "pigdm")
GUIDED = ("dps", "tmpd", "pigdm")  # a guided score: the likelihood term added to the score


def _check_problem(A, y, sigma_y, dim: int) -> tuple[jax.Array, jax.Array, float]:
    A = jnp.asarray(A)
    y = jnp.asarray(y)
    if A.ndim != 2 or A.shape[1] != dim:
        raise ValueError(f"A must have shape (m, d={dim}) (d = the number of data entries), got "
                         f"{A.shape}")
    if y.shape[-1:] != A.shape[:1] or y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (m,) or (B, m) with m={A.shape[0]}, got {y.shape}")
    if not isinstance(sigma_y, (int, float)) or isinstance(sigma_y, bool) or not sigma_y >= 0:
        raise ValueError(f"sigma_y must be a real number >= 0, got {sigma_y!r}")
    return A, y, float(sigma_y)


def guided_score_fn(score_fn: ScoreFn, sde, A: ArrayLike, y: ArrayLike, sigma_y: float,
                    guidance: str = "tmpd", scale: float = 1.0) -> ScoreFn:
    r"""``score_fn(x, t) + scale * grad_x log \hat p_t(y | x)`` for ``"dps"``, ``"tmpd"`` or
    ``"pigdm"`` (module docstring).

    Args:
      score_fn: prior score ``(B, *D), (B,) -> (B, *D)``.
      sde: a ``LinearSDE``.
      A: ``(m, d)``; y: ``(m,)`` or ``(B, m)``; sigma_y: observation noise std (``> 0`` for dps).
      guidance: one of ``GUIDED``.
      scale: weight of the likelihood term, ``> 0``.

    Returns:
      the guided ``score_fn(x, t)``.

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib.
      ValueError: an unknown guidance (the valid ones are listed), ``scale <= 0``, ``dps`` with
        ``sigma_y = 0``; when traced, a ``score_fn`` whose output is not a floating array
        shaped like ``x``.
    """
    check_sde("sde", sde)
    score_fn = shape_checked(score_fn)
    if guidance not in GUIDED:
        raise ValueError(f"guidance must be one of {GUIDED} for a guided score, got "
                         f"{guidance!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise ValueError(f"scale must be a positive real number, got {scale!r}")
    A, y, sigma_y = jnp.asarray(A), jnp.asarray(y), float(sigma_y)
    if guidance == "dps" and sigma_y == 0:
        raise ValueError("sigma_y must be > 0 for guidance='dps' (its likelihood is N(y; A x0, "
                         "sigma_y^2 I)); use 'projection' for noiseless observations, or "
                         "conditional_sample's normalize=True")

    def guided(x, t):
        B = x.shape[0]
        alpha, sigma = sde.marginal_coeffs(t)
        x0_flat = _tweedie_flat(score_fn, t, alpha, sigma)
        if guidance == "tmpd":
            x0, jvp, s = jax.linearize(x0_flat, x, has_aux=True)
            pullback = jax.linear_transpose(jvp, x)
        else:
            x0, pullback, s = jax.vjp(x0_flat, x, has_aux=True)
        r = jnp.broadcast_to(y, (B, A.shape[0])) - x0 @ A.T  # (B, m)
        if guidance == "dps":
            w = r / sigma_y**2
        elif guidance == "pigdm":  # S = r_t^2 A A^T + sigma_y^2 I
            r2 = sigma**2 / (alpha**2 + sigma**2)
            S = r2[:, None, None] * (A @ A.T)[None] + sigma_y**2 * jnp.eye(A.shape[0])[None]
            w = jnp.linalg.solve(S, r[..., None])[..., 0]
        else:
            # J A^T one column of A^T at a time, (m, B, d); A C A^T = sigma^2 / alpha A J A^T
            JAt = jax.vmap(lambda a: jvp(jnp.broadcast_to(a, (B, a.shape[0])).reshape(x.shape))
                           )(A)
            ACA = jnp.einsum("md,nbd->bmn", A, JAt) * (sigma**2 / alpha)[:, None, None]
            w = _psd_solve(jax.lax.stop_gradient(0.5 * (ACA + jnp.swapaxes(ACA, 1, 2))),
                           sigma_y**2, r)
        (grad,) = pullback(w @ A)  # J^T A^T w: the gradient of -r^T S^{-1} r / 2 through x0
        return s + scale * grad.reshape(x.shape)

    return guided


def _tweedie_mean(score_fn, x, t, alpha, sigma):
    """``(x0_hat, score)``: ``x0_hat = (x + sigma_t^2 score(x, t)) / alpha_t``."""
    s = score_fn(x, t)
    return (x + batch_coeff(sigma**2, x) * s) / batch_coeff(alpha, x), s


def _tweedie_flat(score_fn, t, alpha, sigma):
    """``x -> (x0_hat(x) (B, d), score(x, t))``: the Tweedie mean flattened per example, with the
    prior score as auxiliary output (for ``jax.vjp`` / ``jax.linearize`` with ``has_aux``)."""
    def x0_flat(x):
        x0, s = _tweedie_mean(score_fn, x, t, alpha, sigma)
        return x0.reshape(x.shape[0], -1), s
    return x0_flat


def _psd_solve(M: jax.Array, noise_var: float, r: jax.Array) -> jax.Array:
    """``S^+ r`` for ``S = M_+ + noise_var I``, ``M`` symmetric ``(B, m, m)`` and ``M_+`` its
    projection onto the positive semidefinite cone; eigenvalues of ``S`` below ``1e-6`` of its
    largest are dropped (a pseudo-inverse)."""
    lam, V = jnp.linalg.eigh(M)
    lam = jnp.maximum(lam, 0.0) + noise_var
    keep = lam > 1e-6 * jnp.max(lam, axis=-1, keepdims=True)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return jnp.einsum("bij,bj,bkj,bk->bi", V, inv, V, r)


def conditional_sample(rng: jax.Array, sde, score_fn: ScoreFn, shape: Sequence[int],
                       A: ArrayLike, y: ArrayLike, sigma_y: float = 0.0,
                       guidance: str = "projection", method: str = "euler_maruyama",
                       num_steps: int = 1000, eps: float = 1e-3, scale: float = 1.0,
                       normalize: bool = False, **options) -> tuple[jax.Array, jax.Array | int]:
    """Samples of ``p(x_0 | y)`` for ``y = A x_0 + sigma_y z`` with the prior ``score_fn``.

    Args:
      rng, sde, score_fn, shape, method, num_steps, eps, **options: as ``sde_lib.sample``.
      A: ``(m, d)``, ``d = prod(shape[1:])``.
      y: ``(m,)`` or ``(B, m)``.
      sigma_y: observation noise std.
      guidance: one of ``GUIDANCE``.
      scale: weight of the likelihood term (``dps``, ``tmpd``, ``pigdm``).
      normalize: ``dps`` only: Chung et al.'s normalised step after each sampler step
        (module docstring), ``zeta' = scale``; needs a one-state fixed-step method.

    Returns:
      ``x`` ``(B, *D)`` and the NFE of the prior score (a guided call costs one evaluation of
      ``score_fn`` and one vector-Jacobian product; ``tmpd`` adds ``m`` Jacobian-vector products).

    Raises:
      TypeError: as ``sample``: ``rng`` that is not a ``jax.random`` key, ``sde`` that is not
        an SDE of sde_lib.
      ValueError: bad shapes of ``A`` or ``y``, ``sigma_y < 0``, an unknown guidance (the valid
        ones are listed), ``dps`` with ``sigma_y = 0`` (unless ``normalize``), ``normalize``
        with another guidance, ``projection`` with an adaptive or a multistep method, and
        everything ``sample`` rejects; before anything is traced. When traced, a ``score_fn``
        whose output is not a floating array shaped like ``x``.
    """
    check_rng("rng", rng)
    check_sde("sde", sde)
    score_fn = shape_checked(score_fn)
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
    shape = tuple(shape)
    A, y, sigma_y = _check_problem(A, y, sigma_y, math.prod(shape[1:]) if shape else 0)
    if y.ndim == 2 and y.shape[0] != shape[0]:
        raise ValueError(f"y of shape (B, m) must have B = shape[0] = {shape[0]}, got {y.shape}")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    if normalize and guidance != "dps":
        raise ValueError(f"normalize=True is DPS's normalised step; guidance must be 'dps', got "
                         f"{guidance!r}")
    if guidance in GUIDED and not normalize:
        guided = guided_score_fn(score_fn, sde, A, y, sigma_y, guidance, scale)
        return sample(rng, sde, guided, shape, method=method, num_steps=num_steps, eps=eps,
                      **options)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise ValueError(f"scale must be a positive real number, got {scale!r}")
    name = "dps with normalize=True" if normalize else "projection"
    if get_sampler(method).adaptive:
        raise ValueError(f"guidance='{name}' needs a fixed-step method; {method!r} is "
                         f"adaptive")
    prior = _ScoreAt(score_fn) if normalize else score_fn
    step, coeffs, nfe = build_sampler(sde, prior, method, num_steps, eps, **options)
    if isinstance(step, Multistep):
        raise ValueError(f"guidance='{name}' needs a one-state method (it acts on x); "
                         f"{method!r} carries earlier model outputs")
    if normalize:
        step = functools.partial(_dps_step, step=step, prior=prior, sde=sde, A=A, y=y,
                                 zeta=float(scale))
    else:
        A_pinv = jnp.linalg.pinv(A)  # (d, m)
        step = functools.partial(_projected_step, step=step, A=A, A_pinv=A_pinv, y=y)
    rng_prior, rng_steps = jax.random.split(rng)
    return scan_steps(step, rng_steps, sde.prior_sampling(rng_prior, shape), coeffs), nfe


class _ScoreAt:
    """``score_fn`` that, within ``at(x, s)``, returns the score ``s`` already computed at the
    traced array ``x`` itself when called on it (any other array is evaluated): the normalised
    DPS step's vector-Jacobian product evaluates the score at ``x``, and the sampler's step
    takes it from there instead of running the network again."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self._known = score_fn, None

    @contextlib.contextmanager
    def at(self, x: jax.Array, s: jax.Array):
        self._known = (x, s)
        try:
            yield
        finally:
            self._known = None

    def __call__(self, x, t):
        if self._known is not None and x is self._known[0]:
            return self._known[1]
        return self.score_fn(x, t)


def _dps_step(key, x, c, *, step, prior: _ScoreAt, sde, A, y, zeta):
    """``step`` from ``x`` at ``c.t``, then ``- zeta grad_x ||y - A x0_hat(x)||`` per example
    (Chung et al.'s normalised DPS step), on the sample and on its mean. The score at ``x`` is
    evaluated once, in the Tweedie mean's vector-Jacobian product, and reused by ``step``."""
    B = x.shape[0]
    t = jnp.full((B,), c.t, x.dtype)
    alpha, sigma = sde.marginal_coeffs(t)
    x0, pullback, s = jax.vjp(_tweedie_flat(prior.score_fn, t, alpha, sigma), x, has_aux=True)
    r = jnp.broadcast_to(y, (B, A.shape[0])) - x0 @ A.T  # (B, m)
    norms = jnp.sqrt(jnp.sum(r**2, axis=1, keepdims=True) + jnp.finfo(x.dtype).tiny)
    (grad,) = pullback(-(r / norms) @ A)  # grad_x ||r|| = -J^T A^T r / ||r||, per example
    with prior.at(x, s):
        x_next, x_mean = step(key, x, c)
    move = zeta * grad.reshape(x.shape)
    return x_next - move, x_mean - move


def _projected_step(key, x, c, *, step, A, A_pinv, y):
    """``step`` followed by ``x <- x + A^+ (y_{t'} - A x)``; the mean with ``y_{t'}``'s mean."""
    key_step, key_y = jax.random.split(key)
    x, x_mean = step(key_step, x, c)
    B = x.shape[0]
    noise = jax.random.normal(key_y, (B, A.shape[1]), x.dtype) @ A.T

    def project(x, y_t):
        flat = x.reshape(B, -1)
        return (flat + (y_t - flat @ A.T) @ A_pinv.T).reshape(x.shape)

    y_mean = c.alpha_next * jnp.broadcast_to(y, (B, A.shape[0]))
    return project(x, y_mean + c.sigma_next * noise), project(x_mean, y_mean)
