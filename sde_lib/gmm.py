r"""Gaussian-mixture oracle: exact density, score, Tweedie posterior and inverse-problem posterior.

For data ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` and a linear SDE with ``x_t = alpha_t x_0 +
sigma_t eps``, every quantity a diffusion model estimates is known in closed form:

* ``p_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I)`` and its score;
* ``p(x_0 | x_t)`` and ``p(x_0 | y)`` for ``y = A x_0 + sigma_y z``: mixtures whose components
  are the Gaussian conditionals (Bishop 2006, Eqs. 2.113-2.117) and whose weights are
  ``w_k N(y; A mu_k, A Sigma_k A^T + sigma_y^2 I)`` normalised.

Densities and scores use ``Sigma_k = U_k diag(lambda_k) U_k^T`` once, so ``p_t`` for any ``t``
costs ``O(K d^2)`` per point and no matrix inverse.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from sde_lib._validation import check_rng, check_sde, check_times

# the oracle's products at full float32 precision: on GPUs XLA's default for float32 matrix
# products is TF32 (10-bit mantissa), too coarse for a reference score (its rounding slows the
# float32 likelihood solve; benchmarks/README.md, Likelihood)
_EXACT = jax.lax.Precision.HIGHEST


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
    """A mixture ``sum_k weights[k] N(means[k], covs[k])`` in ``d`` dimensions.

    Args:
      weights: ``(K,)``, non-negative, summing to one.
      means: ``(K, d)``.
      covs: ``(K, d, d)``, symmetric positive definite.

    Raises:
      ValueError: naming the argument, for wrong shapes, weights that are negative or do not sum
        to one, or covariances that are not symmetric positive definite.
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike):
        w, m, c = (np.asarray(a, dtype=np.float64) for a in (weights, means, covs))
        if w.ndim != 1 or w.size < 1:
            raise ValueError(f"weights must have shape (K,), got {w.shape}")
        K = w.shape[0]
        if m.ndim != 2 or m.shape[0] != K:
            raise ValueError(f"means must have shape (K, d) = ({K}, d), got {m.shape}")
        d = m.shape[1]
        if c.shape != (K, d, d):
            raise ValueError(f"covs must have shape (K, d, d) = ({K}, {d}, {d}), got {c.shape}")
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6):
            raise ValueError(f"weights must be non-negative and sum to one, got {w} "
                             f"(sum {w.sum()!r})")
        if not np.all(np.isfinite(m)):
            raise ValueError("means must be finite")
        if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-8, atol=1e-10):
            raise ValueError("covs must be symmetric")
        if not np.all(np.linalg.eigvalsh(c) > 0):
            raise ValueError("covs must be positive definite")
        f = jnp.result_type(float)
        self._set(jnp.asarray(w, f), jnp.asarray(m, f), jnp.asarray(c, f))

    def _set(self, weights, means, covs):
        self.weights, self.means, self.covs = weights, means, covs

    @classmethod
    def _unchecked(cls, weights, means, covs) -> GaussianMixture:
        obj = object.__new__(cls)
        obj._set(weights, means, covs)
        return obj

    def tree_flatten(self):
        return (self.weights, self.means, self.covs), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls._unchecked(*children)

    @property
    def dim(self) -> int:
        return int(self.means.shape[-1])

    @property
    def num_components(self) -> int:
        return int(self.weights.shape[-1])

    def _eig(self):
        lam, U = jnp.linalg.eigh(self.covs)
        return lam, U

    # ----- moments, sampling, density -------------------------------------------------------

    def mean(self) -> jax.Array:
        """Mixture mean ``sum_k w_k mu_k``, ``(..., d)``."""
        return jnp.einsum("...k,...kd->...d", self.weights, self.means)

    def covariance(self) -> jax.Array:
        """Mixture covariance ``sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T``, ``(..., d, d)``."""
        m = self.mean()
        second = jnp.einsum("...k,...kij->...ij", self.weights,
                            self.covs + self.means[..., :, None] * self.means[..., None, :])
        return second - m[..., :, None] * m[..., None, :]

    def sample(self, rng: jax.Array, n: int) -> jax.Array:
        """``n`` independent samples, ``(n, d)``; TypeError for an ``rng`` that is not a
        ``jax.random`` key."""
        k_rng, z_rng = jax.random.split(check_rng("rng", rng))
        k = jax.random.categorical(k_rng, jnp.log(self.weights), shape=(n,))
        lam, U = self._eig()
        z = jax.random.normal(z_rng, (n, self.dim), self.means.dtype)
        return self.means[k] + jnp.einsum("nij,nj->ni", U[k], jnp.sqrt(lam[k]) * z,
                                          precision=_EXACT)

    def _component_terms(self, x, alpha, sigma, lam, U):
        """Per-component log-densities of ``p_t`` at ``x``, split as ``rel (B, K) + common
        (B,)``, and the component scores ``(B, K, d)``.

        ``rel`` is each component's log-density relative to component 0, its quadratic form and
        log-determinant subtracted *per coordinate before the sum over d*; ``common`` is
        component 0's. The responsibilities are ``softmax(rel)``, and ``common`` never enters
        them: summed whole, each quadratic form is ``O(d)`` (about 400 at d = 784), so in
        float32 its rounding (and, worse, that of its derivative along a probe, ``s_k^T z``,
        ``O(d)`` too) swamps the differences between components that decide the
        responsibilities. With the per-coordinate differences the Hutchinson divergence of the
        probability flow stays accurate in float32 at d = 784.
        """
        a, s = alpha[:, None, None], sigma[:, None, None]
        var = a**2 * lam[None] + s**2  # (B, K, d): eigenvalues of alpha^2 Sigma_k + sigma^2 I
        r = x[:, None, :] - alpha[:, None, None] * self.means[None]  # (B, K, d)
        proj = jnp.einsum("kji,bkj->bki", U, r, precision=_EXACT)  # U_k^T r
        per_coord = proj**2 / var + jnp.log(var)  # (B, K, d)
        rel = -0.5 * jnp.sum(per_coord - per_coord[:, :1], -1) + jnp.log(self.weights)[None]
        common = -0.5 * (self.dim * math.log(2 * math.pi) + jnp.sum(per_coord[:, 0], -1))
        comp_score = -jnp.einsum("kij,bkj->bki", U, proj / var, precision=_EXACT)
        return rel, common, comp_score

    def _log_prob_and_score(self, x, alpha, sigma, lam, U):
        x = jnp.asarray(x)
        flat = x.reshape(x.shape[0], -1)
        rel, common, comp_score = self._component_terms(flat, alpha, sigma, lam, U)
        resp = jax.nn.softmax(rel, axis=-1)
        score = jnp.einsum("bk,bki->bi", resp, comp_score, precision=_EXACT)
        return logsumexp(rel, axis=-1) + common, score.reshape(x.shape)

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Log-density at ``x`` ``(B, d)``: ``(B,)`` nats."""
        x = jnp.asarray(x)
        ones = jnp.ones(x.shape[:1], x.dtype)
        return self._log_prob_and_score(x, ones, 0 * ones, *self._eig())[0]

    def responsibilities(self, x: ArrayLike) -> jax.Array:
        """``p(k | x) = w_k N(x; mu_k, Sigma_k) / p(x)`` at ``x`` ``(B, d)``: ``(B, K)``."""
        x = jnp.asarray(x)
        ones = jnp.ones(x.shape[:1], x.dtype)
        rel, _, _ = self._component_terms(x, ones, 0 * ones, *self._eig())
        return jax.nn.softmax(rel, axis=-1)

    def score(self, x: ArrayLike) -> jax.Array:
        """``grad_x log p(x)`` at ``x`` ``(B, d)``."""
        x = jnp.asarray(x)
        ones = jnp.ones(x.shape[:1], x.dtype)
        return self._log_prob_and_score(x, ones, 0 * ones, *self._eig())[1]

    # ----- the mixture diffused by a linear SDE ---------------------------------------------

    def marginal(self, sde, t: ArrayLike) -> GaussianMixture:
        """``p_t`` under ``sde`` for a scalar ``t``: ``sum_k w_k N(alpha mu_k, alpha^2 Sigma_k +
        sigma^2 I)``; a concrete ``t`` outside ``[0, T]`` is a ValueError, an ``sde`` that is not
        an SDE of sde_lib a TypeError."""
        check_sde("sde", sde)
        alpha, sigma = sde.marginal_coeffs(jnp.asarray(check_times("t", t, sde.T)))
        eye = jnp.eye(self.dim, dtype=self.covs.dtype)
        return GaussianMixture._unchecked(self.weights, alpha * self.means,
                                          alpha**2 * self.covs + sigma**2 * eye[None])

    def log_prob_fn(self, sde):
        """Exact ``log p_t(x)`` as a function ``(x (B, d), t (B,)) -> (B,)``."""
        check_sde("sde", sde)
        lam, U = self._eig()

        def log_prob_fn(x, t):
            alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
            return self._log_prob_and_score(x, alpha, sigma, lam, U)[0]

        return log_prob_fn

    def score_fn(self, sde):
        """Exact ``score_fn(x, t) = grad_x log p_t(x)`` under ``sde``, ``x`` ``(B, *D)`` with
        ``prod(D) = d``, ``t`` ``(B,)``. Safe under ``jit``, ``vmap`` and ``pmap``."""
        check_sde("sde", sde)
        lam, U = self._eig()

        def score_fn(x, t):
            alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
            return self._log_prob_and_score(x, alpha, sigma, lam, U)[1]

        return score_fn

    # ----- posteriors -------------------------------------------------------------------------

    def condition(self, A: ArrayLike, y: ArrayLike, sigma_y: ArrayLike) -> GaussianMixture:
        r"""Exact posterior ``p(x_0 | y)`` for ``y = A x_0 + sigma_y z``, ``z ~ N(0, I)``.

        Component ``k`` becomes ``N(mu_k + G_k (y - A mu_k), Sigma_k - G_k A Sigma_k)`` with gain
        ``G_k = Sigma_k A^T S_k^{-1}``, ``S_k = A Sigma_k A^T + sigma_y^2 I``, and its weight
        ``w_k N(y; A mu_k, S_k)`` renormalised (Bishop 2006, Eqs. 2.113-2.117).

        Args:
          A: ``(m, d)``.
          y: ``(m,)``, one observation (``jax.vmap`` for a batch).
          sigma_y: scalar ``>= 0`` (``S_k`` must stay positive definite).
        """
        A, y = jnp.asarray(A), jnp.asarray(y)
        Sigma, mu = self.covs, self.means
        S = A @ Sigma @ A.T + sigma_y**2 * jnp.eye(A.shape[0], dtype=Sigma.dtype)[None]  # (K,m,m)
        L = jnp.linalg.cholesky(S)
        r = y[None] - mu @ A.T  # (K, m)
        SigAT = Sigma @ A.T  # (K, d, m)
        # G_k = Sigma_k A^T S_k^{-1}; computed as (S_k^{-1} A Sigma_k)^T with two triangular solves
        solve = jax.vmap(lambda Lk, B: jax.scipy.linalg.cho_solve((Lk, True), B))
        Gt = solve(L, jnp.swapaxes(SigAT, -1, -2))  # (K, m, d) = S^{-1} A Sigma
        means = mu + jnp.einsum("kmd,km->kd", Gt, r, precision=_EXACT)
        covs = Sigma - jnp.swapaxes(Gt, -1, -2) @ jnp.swapaxes(SigAT, -1, -2)
        covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
        white = jax.vmap(lambda Lk, rk: jax.scipy.linalg.solve_triangular(Lk, rk, lower=True))(
            L, r)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
        log_w = (jnp.log(self.weights) - 0.5 * (A.shape[0] * math.log(2 * math.pi) + log_det)
                 - 0.5 * jnp.sum(white**2, -1))
        return GaussianMixture._unchecked(jnp.exp(log_w - logsumexp(log_w)), means, covs)

    def posterior(self, sde, x_t: ArrayLike, t: ArrayLike) -> GaussianMixture:
        """Exact ``p(x_0 | x_t)`` per example: ``condition(alpha_t I, x_t, sigma_t)``, returned as a
        batched mixture (weights ``(B, K)``, means ``(B, K, d)``, covs ``(B, K, d, d)``)."""
        check_sde("sde", sde)
        alpha, sigma = sde.marginal_coeffs(jnp.asarray(t))
        eye = jnp.eye(self.dim, dtype=self.covs.dtype)
        return jax.vmap(lambda x, a, s: self.condition(a * eye, x, s))(
            jnp.asarray(x_t), alpha, sigma)


# ----- constructors of the data the seeds use -------------------------------------------------

def gaussian_pair(rng: jax.Array, dim: int, shift: float = 4.0, std: float = 1.0
                  ) -> GaussianMixture:
    """The seeds' mixture of two identical Gaussians ``N(mu_k, std^2 I)`` with random shifts
    ``mu_k = shift xi_k / sqrt(dim)``, ``xi_k ~ N(0, I)``, equal weights."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    means = shift * np.asarray(jax.random.normal(check_rng("rng", rng), (2, dim)),
                               np.float64) / math.sqrt(dim)
    covs = np.broadcast_to(std**2 * np.eye(dim), (2, dim, dim))
    return GaussianMixture(np.full(2, 0.5), means, covs)


def ring_of_gaussians(num_components: int = 8, radius: float = 2.0,
                      std: float = 0.25) -> GaussianMixture:
    """2-D: ``num_components`` equal isotropic Gaussians on a circle (the '8 Gaussians' test)."""
    angle = 2 * np.pi * np.arange(num_components) / num_components
    means = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
    covs = np.broadcast_to(std**2 * np.eye(2), (num_components, 2, 2))
    return GaussianMixture(np.full(num_components, 1.0 / num_components), means, covs)


def grid_of_gaussians(per_side: int = 3, spacing: float = 2.0, std: float = 0.25
                      ) -> GaussianMixture:
    """2-D: ``per_side^2`` equal isotropic Gaussians on a centred square grid."""
    c = spacing * (np.arange(per_side) - (per_side - 1) / 2)
    means = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    K = means.shape[0]
    return GaussianMixture(np.full(K, 1.0 / K), means, np.broadcast_to(std**2 * np.eye(2),
                                                                        (K, 2, 2)))


def asymmetric_mixture_2d() -> GaussianMixture:
    """2-D: three components with unequal weights and correlated covariances (a test case in
    which no symmetry hides a sign or transpose error)."""
    weights = np.array([0.2, 0.5, 0.3])
    means = np.array([[-2.0, 1.0], [1.5, 0.5], [0.0, -2.0]])
    covs = np.array([[[0.5, 0.2], [0.2, 0.3]],
                     [[0.3, -0.1], [-0.1, 0.6]],
                     [[0.8, 0.0], [0.0, 0.2]]])
    return GaussianMixture(weights, means, covs)


def anisotropic_mixture_2d() -> GaussianMixture:
    """2-D: three components with unequal weights (0.5, 0.3, 0.2) and small, unequal, rotated
    covariances ``R(theta_k) diag(l_k) R(theta_k)^T``: eigenvalues (0.5, 0.005), (0.1, 0.02) and
    (0.03, 0.001) (standard deviations down to 0.03) at angles 30, -60 and 0 degrees. The data of
    ``experiments.testbeds`` that favours no sampler: no component has unit variance, and the
    score near ``t = 0`` is stiff (curvature up to 1000)."""
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-1.5, 0.5], [1.0, 1.0], [0.5, -1.5]])
    eig = np.array([[0.5, 0.005], [0.1, 0.02], [0.03, 0.001]])
    angle = np.deg2rad([30.0, -60.0, 0.0])
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1),
                    np.stack([np.sin(angle), np.cos(angle)], -1)], -2)  # (K, 2, 2)
    covs = np.einsum("kij,kj,klj->kil", rot, eig, rot)
    return GaussianMixture(weights, means, covs)
