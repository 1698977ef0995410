r"""Sampler error: exact on Gaussian data, by change of variables for deterministic samplers,
pathwise for stochastic ones, and per mode or by a two-sample test for any sampler.

For Gaussian data ``N(mu, diag(s^2))`` and a linear SDE, ``p_t = N(alpha_t mu, diag(alpha_t^2 s^2
+ sigma_t^2))`` and its score ``-(x - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2)`` is affine in
``x``. Every affine sampler step (``Sampler.affine``: Euler-Maruyama, reverse diffusion, DDPM
ancestral with either variance, DDIM with any ``eta``, probability-flow Euler and Heun,
DPM-Solver-2S, EDM's Heun; a deterministic multistep sampler is affine as a whole map) then maps
each coordinate as ``x_{k+1} = a_k x_k + b_k + c_k z_k`` with ``z_k ~ N(0, 1)`` independent of
``x_k``, so from the prior ``N(0, prior_std^2)`` the output is Gaussian with

    m_{k+1} = a_k m_k + b_k,     v_{k+1} = a_k^2 v_k + c_k^2,

and the last step's noiseless mean (what the driver returns) has variance ``a_K^2 v_K``.
``a_k, b_k`` come from the sampler's own step at ``x = 0`` and ``x = 1``, and ``c_k`` from its
noise, which a step draws as ``jax.random.normal(key, x.shape)`` from its key: the law is that of
the registered sampler itself, not of a transcription. ``gaussian_kl`` and ``gaussian_w2`` then
give the exact KL divergence and 2-Wasserstein distance of the sampler's output to the data.

For any data (a mixture, a trained score) a deterministic sampler (``Sampler.deterministic``:
probability-flow Euler and Heun, DDIM with ``eta = 0``) is a map ``x_0 = Phi(x_T)`` of the
prior draw, and the density of its output follows by the change of variables along that
discrete map: ``log q(x_0) = log p_T(x_T) - log |det D Phi(x_T)|`` (``flow_log_density``; the
Jacobian by forward-mode autodiff through every step, exact in low dimension). Then
``KL(q || p) = E_{x_T}[log q(Phi(x_T)) - log p(Phi(x_T))]`` needs Monte Carlo only over the prior
draws (``flow_kl``, with its standard error). With the exact score it tends to
``flow_limit_kl = KL(prior || p_T)``, not to 0: the exact flow preserves KL.

A stochastic sampler is compared with a converged run of itself driven by the same prior draw
and the same Brownian path (``coupled_error``; ``brownian_normals`` gives two grids' step normals
on one path, any grids), which removes the sampling noise that dominates a comparison of two
independent sample sets. For any sampler on mixture data, ``mode_errors`` gives each
component's weight, mean and covariance error with standard errors, and ``mmd_test`` a
permutation two-sample test against exact samples.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from sde_lib._validation import check_num_steps, check_rng, check_sde, shape_checked
from sde_lib.sampling import SAMPLERS, get_sampler, scan_steps


class GaussianLaw(NamedTuple):
    """A Gaussian with diagonal covariance: ``mean`` and ``var``, each ``(D,)``."""

    mean: jax.Array
    var: jax.Array


def gaussian_score_fn(sde, mean: ArrayLike, var: ArrayLike):
    r"""The exact score of ``p_t`` for data ``N(mean, diag(var))`` under ``sde``:
    ``score_fn(x (B, D), t (B,)) = -(x - alpha_t mean) / (alpha_t^2 var + sigma_t^2)``."""
    mean = jnp.asarray(mean)[None]
    var = jnp.broadcast_to(jnp.asarray(var, mean.dtype), mean.shape)

    def score_fn(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha[:, None], sigma[:, None]
        return -(x - alpha * mean) / (alpha**2 * var + sigma**2)

    return score_fn


def _data(mean, var) -> GaussianLaw:
    mean = jnp.asarray(mean)
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"mean must be a vector (D,), got shape {mean.shape}")
    var = jnp.broadcast_to(jnp.asarray(var, mean.dtype), mean.shape)
    if not bool(jnp.all(var > 0)):
        raise ValueError("var must be positive")
    return GaussianLaw(mean, var)


def gaussian_sampler_law(sde, mean: ArrayLike, var: ArrayLike, method: str,
                         num_steps: int, eps: float = 1e-3, **options) -> GaussianLaw:
    """The exact law of ``sde_lib.sample(..., method, num_steps, eps, **options)`` with the exact
    score of the data ``N(mean, diag(var))``.

    Args:
      sde: a linear SDE (``marginal_coeffs``, ``prior_std``).
      mean, var: the data's mean ``(D,)`` and variances (``(D,)`` or a scalar).
      method, num_steps, eps, options: as for ``sde_lib.sample``.

    Returns:
      ``GaussianLaw(mean, var)`` of the samples, each ``(D,)``.

    A deterministic sampler whose step carries more than ``x`` (the multistep DPM-Solver++ and
    UniPC) is an affine map ``x_0 = a x_T + b`` of the prior draw as a whole, coordinate by
    coordinate: ``b = Phi(0)``, ``a = Phi(1) - Phi(0)`` from its own map (``sampler_map``).

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib.
      ValueError: a method that is neither affine nor deterministic (``pc``, ``edm_stochastic``
        with churn) or adaptive, ``clip_denoised`` (a nonlinear step), or bad options, naming
        them.
    """
    check_sde("sde", sde)
    data = _data(mean, var)
    sampler = get_sampler(method)
    opts = sampler.check_options(options) if not sampler.adaptive else {}
    if sampler.adaptive or not (sampler.affine or sampler.deterministic(opts)):
        affine = [name for name, s in SAMPLERS.items() if not s.adaptive and (
            s.affine or s.deterministic(s.check_options({})))]
        raise ValueError(f"method must be an affine fixed-step sampler, one of {affine}, got "
                         f"{method!r}")
    if opts.get("clip_denoised") is not None:
        raise ValueError("clip_denoised makes the step nonlinear; its law is not Gaussian")
    if not sampler.affine:  # deterministic as a whole: the map at 0 and 1
        phi = sampler_map(sde, gaussian_score_fn(sde, *data), method, num_steps, eps, **options)
        ends = phi(jnp.stack([jnp.zeros_like(data.mean), jnp.ones_like(data.mean)]))
        a = ends[1] - ends[0]
        return GaussianLaw(ends[0], a**2 * sde.prior_std**2)
    with jax.ensure_compile_time_eval():
        step, coeffs = sampler.build(sde, gaussian_score_fn(sde, *data), num_steps, eps, opts)
    dtype = data.mean.dtype
    coeffs = jax.tree.map(lambda a: jnp.asarray(a, dtype), coeffs)
    x = jnp.stack([jnp.zeros_like(data.mean), jnp.ones_like(data.mean)])
    keys = jax.random.split(jax.random.key(0), coeffs.t.shape[0])

    def body(carry, inputs):
        m, v, _ = carry
        key, c = inputs
        x_next, x_mean = step(key, x, c)
        a, b = x_mean[1] - x_mean[0], x_mean[0]
        z = jax.random.normal(key, x.shape, dtype)
        c_noise = jnp.sum((x_next - x_mean) * z, 0) / jnp.sum(z * z, 0)  # exact: noise = c z
        return (a * m + b, a**2 * v + c_noise**2, a**2 * v), None

    prior = jnp.full_like(data.mean, sde.prior_std**2)
    (m, _, v_mean), _ = lax.scan(body, (jnp.zeros_like(data.mean), prior, prior),
                                 (keys, coeffs))
    return GaussianLaw(m, v_mean)


def gaussian_kl(q: GaussianLaw, p: GaussianLaw) -> jax.Array:
    r"""``KL(q || p)`` in nats for diagonal Gaussians: ``1/2 sum(v_q / v_p + (m_q - m_p)^2 / v_p
    - 1 + log(v_p / v_q))``."""
    return 0.5 * jnp.sum(q.var / p.var + (q.mean - p.mean) ** 2 / p.var - 1.0
                         + jnp.log(p.var / q.var))


def gaussian_w2(q: GaussianLaw, p: GaussianLaw) -> jax.Array:
    r"""The 2-Wasserstein distance of diagonal Gaussians: ``sqrt(|m_q - m_p|^2 + |sqrt(v_q) -
    sqrt(v_p)|^2)`` (Dowson & Landau 1982, commuting covariances)."""
    return jnp.sqrt(jnp.sum((q.mean - p.mean) ** 2 + (jnp.sqrt(q.var) - jnp.sqrt(p.var)) ** 2))


def sampler_map(sde, score_fn, method: str, num_steps: int, eps: float = 1e-3, **options):
    """The map ``Phi: x_T (B, *D) -> x_0 (B, *D)`` of a deterministic fixed-step sampler (its
    own steps, as ``sde_lib.sample`` runs them after the prior draw).

    Raises:
      TypeError: ``sde`` that is not an SDE of sde_lib.
      ValueError: a method (or options) that is not deterministic, naming the ones that are;
        when traced, a ``score_fn`` whose output is not a floating array shaped like ``x``.
    """
    check_sde("sde", sde)
    score_fn = shape_checked(score_fn)
    sampler = get_sampler(method)
    opts = sampler.check_options(options)
    if sampler.adaptive or not sampler.deterministic(opts):
        names = [name for name, s in SAMPLERS.items()
                 if not s.adaptive and s.deterministic(s.check_options({}))]
        raise ValueError(f"method must be a deterministic fixed-step sampler, one of {names} "
                         f"(ddim with eta=0), got {method!r} with {options}")
    with jax.ensure_compile_time_eval():  # the grid is a constant, also under a caller's jit
        step, coeffs = sampler.build(sde, score_fn, num_steps, eps, opts)
    return lambda x_T: scan_steps(step, jax.random.key(0), x_T, coeffs)


def flow_log_density(sde, score_fn, x_T: ArrayLike, method: str, num_steps: int,
                     eps: float = 1e-3, **options) -> tuple[jax.Array, jax.Array]:
    r"""``(x_0, log q(x_0))`` for prior draws ``x_T (B, d)``: the samples of a deterministic
    sampler and their log-density under its output law,
    ``log q(x_0) = log p_T(x_T) - log |det D Phi(x_T)|`` (nats, ``(B,)``), with the ``d x d``
    Jacobian of the whole discrete map by ``jax.jacfwd``."""
    x_T = jnp.asarray(x_T)
    if x_T.ndim != 2:
        raise ValueError(f"x_T must be (B, d) (flat data), got shape {x_T.shape}")
    phi = sampler_map(sde, score_fn, method, num_steps, eps, **options)
    jac = jax.vmap(jax.jacfwd(lambda v: phi(v[None])[0]))(x_T)
    _, logdet = jnp.linalg.slogdet(jac)
    return phi(x_T), sde.prior_logp(x_T) - logdet


def flow_kl(rng: jax.Array, sde, score_fn, log_prob, num: int, dim: int, method: str,
            num_steps: int, eps: float = 1e-3, **options) -> tuple[jax.Array, jax.Array]:
    r"""``(KL(q || p), its standard error)`` in nats between a deterministic sampler's output law
    ``q`` and the data law with log-density ``log_prob(x (B, d)) -> (B,)``: the mean of
    ``log q(x_0) - log p(x_0)`` over ``num`` prior draws (``flow_log_density``); scalar arrays,
    so it can run under ``jax.jit``. Raises as ``sampler_map``, and TypeError for an ``rng``
    that is not a ``jax.random`` key."""
    check_rng("rng", rng)
    check_sde("sde", sde)
    x_T = sde.prior_sampling(rng, (num, dim))
    x0, log_q = flow_log_density(sde, score_fn, x_T, method, num_steps, eps, **options)
    diff = log_q - log_prob(x0)
    return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(num)


def flow_limit_kl(rng: jax.Array, sde, log_prob_T, num: int, dim: int
                  ) -> tuple[jax.Array, jax.Array]:
    r"""``(KL(prior || p_T), its standard error)`` in nats: the limit of every deterministic
    sampler's ``flow_kl`` with the exact score as its steps grow.

    The exact probability flow is a bijection that carries ``p_T`` to ``p_eps``; a sampler that
    follows it from the prior carries the prior to its output ``q_eps``, and KL is invariant under
    a bijection, so ``KL(q_eps || p_eps) = KL(prior || p_T)`` however accurate the solver: the
    prior's mismatch with ``p_T`` (``alpha_T mu`` is not 0 for a VP SDE, ``sigma_T`` is not the
    prior's scale for VE) is carried to the output unchanged. (The data ``p_0`` differs from
    ``p_eps`` by ``O(eps)``.) The reverse SDE is not bound by it: its noise contracts the prior's
    error. Monte Carlo over ``num`` prior draws of ``log prior(z) - log_prob_T(z)``, where
    ``log_prob_T(z (B, dim)) -> (B,)`` is the data's marginal at ``sde.T`` (for a mixture,
    ``gmm.marginal(sde, sde.T).log_prob``). TypeError for an ``rng`` that is not a
    ``jax.random`` key or an ``sde`` that is not an SDE of sde_lib."""
    check_rng("rng", rng)
    check_sde("sde", sde)
    z = sde.prior_sampling(rng, (num, dim))
    diff = sde.prior_logp(z) - log_prob_T(z)
    return jnp.mean(diff), jnp.std(diff, ddof=1) / jnp.sqrt(num)


# ----- SDE samplers: pathwise error on one Brownian path ----------------------------------------

def _grid_times(sampler, sde, num_steps, eps, opts) -> np.ndarray:
    """The ``K + 1`` decreasing times ``t_0, ..., t_K = 0`` a fixed-step sampler steps through."""
    _, coeffs = sampler.coefficients(sde, num_steps, float(eps), opts)
    return np.append(np.asarray(coeffs.t, np.float64), float(coeffs.t_next[-1]))


def _coupled_sampler(method, options):
    sampler = get_sampler(method)
    if sampler.adaptive or not sampler.affine:
        names = [name for name, s in SAMPLERS.items() if s.affine and not s.adaptive]
        raise ValueError(f"method must be a fixed-step sampler that draws one normal per step, "
                         f"one of {names}, got {method!r}")
    return sampler, sampler.check_options(options)


def brownian_normals(rng: jax.Array, fine_times: ArrayLike, times: ArrayLike,
                     shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    r"""The standard normals of two grids' steps on one Brownian path ``W``, ``(K, *shape)`` each.

    ``W`` runs backwards from ``W(fine_times[0]) = 0`` with independent increments
    ``W(s_{j+1}) - W(s_j) ~ N(0, s_j - s_{j+1})`` drawn from ``rng`` on the fine grid ``s``; a
    time of ``times`` between two fine times gets its value from the Brownian bridge between them
    (``W(t) = W(l) + (l - t) / (l - r) (W(r) - W(l)) + sqrt((l - t)(t - r) / (l - r)) xi``, one
    after the other within an interval), so the fine grid's normals do not depend on ``times``.
    Step ``k`` of a grid gets ``z_k = (W(t_{k+1}) - W(t_k)) / sqrt(t_k - t_{k+1})``, a standard
    normal: a run on ``times`` and a run on ``fine_times`` given these draws in place of their
    keys are driven by the same Brownian path.

    Args:
      rng: a ``jax.random`` key.
      fine_times, times: strictly decreasing grids (the ``K + 1`` times of a sampler's steps);
        ``times`` must lie within ``[fine_times[-1], fine_times[0]]``.
      shape: the shape of one draw, ``(B, *D)``.

    Returns:
      ``(fine_normals, normals)``, ``(len(fine_times) - 1, *shape)`` and
      ``(len(times) - 1, *shape)``.
    """
    s, t = np.asarray(fine_times, np.float64), np.asarray(times, np.float64)
    for name, g in (("fine_times", s), ("times", t)):
        if g.ndim != 1 or g.size < 2 or np.any(np.diff(g) >= 0):
            raise ValueError(f"{name} must be a strictly decreasing grid of at least 2 times")
    tol = 1e-6 * (s[0] - s[-1])
    if t[0] > s[0] + tol or t[-1] < s[-1] - tol:
        raise ValueError(f"times must lie within the fine grid [{s[-1]}, {s[0]}], got "
                         f"[{t[-1]}, {t[0]}]")
    key_w, key_bridge = jax.random.split(rng)
    fine_z = jax.random.normal(key_w, (s.size - 1, *shape))
    w = jnp.concatenate([jnp.zeros((1, *shape)), jnp.cumsum(
        jnp.sqrt(jnp.asarray(-np.diff(s), fine_z.dtype)).reshape(-1, *[1] * len(shape))
        * fine_z, axis=0)])
    nearest = np.abs(t[:, None] - s[None]).argmin(1)
    on_fine = np.abs(s[nearest] - t) <= tol
    xi = jax.random.normal(key_bridge, (int(np.sum(~on_fine)), *shape))
    values, left, bridged = [], None, 0
    for tk, j, on in zip(t, nearest, on_fine, strict=True):
        if on:
            values.append(w[j])
            left = (s[j], w[j])
            continue
        right = int(np.searchsorted(-s, -tk))  # the first fine time below tk
        if left is None or left[0] > s[right - 1]:  # the interval's left end is a fine time
            left = (s[right - 1], w[right - 1])
        (l_t, l_w), (r_t, r_w) = left, (s[right], w[right])
        frac = (l_t - tk) / (l_t - r_t)
        value = l_w + frac * (r_w - l_w) + math.sqrt(frac * (tk - r_t)) * xi[bridged]
        bridged += 1
        values.append(value)
        left = (tk, value)
    w_t = jnp.stack(values)
    normals = (w_t[1:] - w_t[:-1]) / jnp.sqrt(jnp.asarray(-np.diff(t), w_t.dtype)).reshape(
        -1, *[1] * len(shape))
    return fine_z, normals


def coupled_error(rng: jax.Array, sde, score_fn, shape: tuple[int, ...], method: str,
                  nums_steps: tuple[int, ...], ref_steps: int, eps: float = 1e-3,
                  **options) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Pathwise (strong) error of a sampler against a converged run of itself on the same path.

    One prior draw ``x_T`` and one Brownian path (``brownian_normals``) drive the reference run
    (``ref_steps`` steps) and a run with each of ``nums_steps`` steps; the error is the root mean
    square distance ``sqrt(E |x_K - x_ref|^2)`` between paired outputs, which falls at the
    sampler's strong order: 1 for Euler-Maruyama on these SDEs, whose noise is additive; 1 for
    ancestral sampling only once ``sigma_t^2`` near ``t = eps`` is large against the steps;
    1/2 for reverse diffusion, whose last noise is added at ``t = T / K``, so the reference's
    noise below it (sd ``~ g(0) sqrt(T / K)``) is missing from the run. For a deterministic
    sampler it is the discretization error of the map from the same prior draws.

    Args:
      rng: a ``jax.random`` key (prior draw and path).
      sde, score_fn: as for ``sde_lib.sample``.
      shape: ``(B, *D)``.
      method, options, eps: a fixed-step sampler that draws one normal per step (``affine``).
      nums_steps: the step counts to measure.
      ref_steps: the reference run's steps.

    Returns:
      ``(rms, se, samples)``: the errors and their standard errors (delta method over the
      ``B`` pairs), ``(len(nums_steps),)`` each, and the reference samples ``(B, *D)``.

    Raises:
      TypeError: ``rng`` that is not a ``jax.random`` key, ``sde`` that is not an SDE of
        sde_lib.
      ValueError: a method that does not draw one normal per step (named), step counts not in
        ``1 .. MAX_NUM_STEPS``; when traced, a ``score_fn`` whose output is not a floating
        array shaped like ``x``.
    """
    check_rng("rng", rng)
    check_sde("sde", sde)
    score_fn = shape_checked(score_fn)
    sampler, opts = _coupled_sampler(method, options)
    check_num_steps("ref_steps", ref_steps)
    for k in nums_steps:
        check_num_steps("nums_steps", k)
    rng_prior, rng_path = jax.random.split(rng)
    x_T = sde.prior_sampling(rng_prior, tuple(shape))
    fine_times = _grid_times(sampler, sde, ref_steps, eps, opts)

    def run(num_steps, normals):
        with jax.ensure_compile_time_eval():
            step, coeffs = sampler.build(sde, score_fn, num_steps, float(eps), opts)
        coeffs = jax.tree.map(lambda a: a.astype(x_T.dtype), coeffs)

        @jax.jit
        def solve(normals):
            def body(carry, inputs):
                z, c = inputs
                return step(z.astype(x_T.dtype), carry[0], c), None

            (_, x_mean), _ = lax.scan(body, (x_T, x_T), (normals, coeffs))
            return x_mean

        return solve(normals)

    ref = None
    rms, se = [], []
    for num_steps in nums_steps:
        fine_z, z = brownian_normals(rng_path, fine_times,
                                     _grid_times(sampler, sde, num_steps, eps, opts), x_T.shape)
        if ref is None:
            ref = run(ref_steps, fine_z)
        x = run(num_steps, z)
        err2 = jnp.sum((x - ref).reshape(x.shape[0], -1) ** 2, -1)
        m = jnp.mean(err2)
        rms.append(jnp.sqrt(m))
        se.append(jnp.where(m > 0, jnp.std(err2, ddof=1) / jnp.sqrt(err2.shape[0])
                            / (2 * jnp.sqrt(jnp.where(m > 0, m, 1.0))), 0.0))
    return jnp.stack(rms), jnp.stack(se), ref


# ----- any sampler on mixture data: per-mode errors and a two-sample test -----------------------

class ModeErrors(NamedTuple):
    """Per-component errors of samples against a mixture, each ``(K,)`` with its standard error.

    ``weight``: ``hat w_k - w_k``; ``mean``: ``|hat mu_k - mu_k|``; ``cov``: ``|hat Sigma_k -
    Sigma_k|_F / |Sigma_k|_F``; ``*_se`` their standard errors.
    """

    weight: jax.Array
    weight_se: jax.Array
    mean: jax.Array
    mean_se: jax.Array
    cov: jax.Array
    cov_se: jax.Array


def _soft_moments(r, x):
    w = jnp.mean(r, 0)  # (K,)
    mean = jnp.einsum("nk,nd->kd", r, x) / (x.shape[0] * w[:, None])
    return w, mean


def mode_errors(rng: jax.Array, gmm, x: ArrayLike, num_bootstrap: int = 200) -> ModeErrors:
    r"""Mode weights, means and covariances of samples ``x (n, d)`` against the mixture ``gmm``.

    Each sample is assigned softly by the true responsibilities ``r_k(x) = p(k | x)``:
    ``hat w_k = mean r_k``, ``hat mu_k = sum r_k x / sum r_k`` and ``hat Sigma_k`` alike. For exact
    samples these are unbiased (``E_p r_k = w_k``, ``E_p[r_k x] = w_k mu_k``, ``E_p[r_k (x -
    mu_k)(x - mu_k)^T] = w_k Sigma_k``), where a hard (most probable component) assignment is
    biased wherever components overlap. The weight's standard error is ``sd(r_k) / sqrt(n)``,
    the binomial ``sqrt(w_k (1 - w_k) / n)`` when the components are separated (``r_k`` in
    ``{0, 1}``); the mean and covariance errors, norms, get theirs from ``num_bootstrap``
    resamples of ``x``. The norms are positive even for exact samples: their Monte Carlo floor is
    the same statistic on as many exact samples. TypeError for an ``rng`` that is not a
    ``jax.random`` key.
    """
    check_rng("rng", rng)
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != gmm.dim:
        raise ValueError(f"x must be (n, d={gmm.dim}), got shape {x.shape}")
    r = gmm.responsibilities(x)
    n = x.shape[0]

    def errors(r, x):
        w, mean = _soft_moments(r, x)
        diff = x[:, None, :] - mean[None]  # (n, K, d)
        cov = jnp.einsum("nk,nki,nkj->kij", r, diff, diff) / (n * w[:, None, None])
        cov_err = (jnp.linalg.norm(cov - gmm.covs, axis=(1, 2))
                   / jnp.linalg.norm(gmm.covs, axis=(1, 2)))
        return jnp.linalg.norm(mean - gmm.means, axis=-1), cov_err

    mean_err, cov_err = errors(r, x)
    idx = jax.random.randint(rng, (num_bootstrap, n), 0, n)
    boot_mean, boot_cov = jax.lax.map(lambda i: errors(r[i], x[i]), idx)
    return ModeErrors(jnp.mean(r, 0) - gmm.weights, jnp.std(r, 0, ddof=1) / math.sqrt(n),
                      mean_err, jnp.std(boot_mean, 0, ddof=1), cov_err,
                      jnp.std(boot_cov, 0, ddof=1))


def mmd_test(rng: jax.Array, x: ArrayLike, y: ArrayLike, num_permutations: int = 200,
             bandwidths: tuple[float, ...] | None = None) -> tuple[jax.Array, jax.Array]:
    r"""Two-sample test of ``x (n, d)`` against ``y (m, d)`` by the maximum mean discrepancy.

    ``MMD^2`` (Gretton et al. 2012, Eq. 5, the biased V-statistic) with the sum of Gaussian kernels
    ``exp(-|u - v|^2 / (2 h^2))`` over ``bandwidths`` (default: the median pairwise distance of
    the pooled samples times 1/16, 1/8, 1/4, 1/2 and 1: the median alone is the scale of the
    spread between modes and misses errors inside them), and its permutation p-value ``(1 +
    #{MMD^2 of a random relabelling of the pooled samples >= MMD^2}) / (1 +
    num_permutations)``: under the
    null (same law) it is uniform on its grid, so ``p < 0.05`` rejects at level 0.05 exactly.

    Returns:
      ``(mmd2, p_value)``, scalar arrays.

    Raises:
      TypeError: ``rng`` that is not a ``jax.random`` key.
      ValueError: ``x`` and ``y`` of other shapes, ``num_permutations < 1``.
    """
    check_rng("rng", rng)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d), got {x.shape} and {y.shape}")
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be >= 1, got {num_permutations}")
    z = jnp.concatenate([x, y])
    sq = jnp.sum(z**2, 1)
    d2 = jnp.maximum(sq[:, None] + sq[None] - 2 * z @ z.T, 0.0)
    if bandwidths is None:
        h = jnp.sqrt(jnp.median(d2[jnp.triu_indices(z.shape[0], 1)]))
        hs = h * jnp.array([0.0625, 0.125, 0.25, 0.5, 1.0], z.dtype)
    else:
        hs = jnp.asarray(bandwidths, z.dtype)
    kernel = sum(jnp.exp(-d2 / (2 * hs[i] ** 2)) for i in range(hs.shape[0]))
    n, m = x.shape[0], y.shape[0]
    labels = jnp.concatenate([jnp.full(n, 1.0 / n), jnp.full(m, -1.0 / m)]).astype(z.dtype)

    def stat(s):
        return s @ kernel @ s

    observed = stat(labels)
    perms = jax.vmap(lambda k: jax.random.permutation(k, labels))(
        jax.random.split(rng, num_permutations))
    null = jax.lax.map(stat, perms, batch_size=16)
    return observed, (1 + jnp.sum(null >= observed)) / (1 + num_permutations)
