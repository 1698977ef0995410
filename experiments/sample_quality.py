r"""Sample quality against a known data law (the Gaussian-mixture oracle).

* ``sliced_wasserstein(x, y, rng)``: the sliced 2-Wasserstein distance (Rabin et al. 2011;
  Bonneel et al. 2015) ``SW_2(x, y)^2 = E_theta W_2(theta^T x, theta^T y)^2`` over directions
  uniform on the sphere, each 1-D ``W_2`` from the sorted projections (equal sample sizes);
* ``mode_weights(gmm, x)``: the fraction of samples whose most probable component is ``k``;
* ``mean_nll(gmm, x)``: the mean true negative log-density ``-E log p(x)`` of the samples in nats
  per dimension (for exact samples it is the entropy per dimension).

All take ``(n, d)`` arrays and return Python floats or numpy arrays.
"""

from __future__ import annotations

import jax
import numpy as np

from sde_lib.gmm import GaussianMixture


def sliced_wasserstein(x, y, rng: jax.Array, num_projections: int = 256) -> float:
    """``SW_2`` between the empirical laws of ``x`` and ``y``, both ``(n, d)``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be (n, d) arrays of the same shape, got {x.shape}, "
                         f"{y.shape}")
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    theta = np.array(jax.random.normal(rng, (x.shape[1], num_projections), dtype))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    # numpy's sort: about 15 times faster than XLA's on the CPU for (2000, 256)
    px, py = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def component_log_probs(gmm: GaussianMixture, x) -> np.ndarray:
    """``log w_k + log N(x; mu_k, Sigma_k)``, ``(n, K)``."""
    x = np.asarray(x, np.float64)
    out = []
    for w, mu, cov in zip(np.asarray(gmm.weights), np.asarray(gmm.means), np.asarray(gmm.covs),
                          strict=True):
        L = np.linalg.cholesky(cov)
        z = np.linalg.solve(L, (x - mu).T)
        logdet = 2 * np.sum(np.log(np.diag(L)))
        out.append(np.log(w) - 0.5 * (np.sum(z**2, 0) + logdet + len(mu) * np.log(2 * np.pi)))
    return np.stack(out, axis=1)


def mode_weights(gmm: GaussianMixture, x) -> np.ndarray:
    """Fraction of the samples assigned to each component (most probable component), ``(K,)``."""
    k = np.argmax(component_log_probs(gmm, x), axis=1)
    return np.bincount(k, minlength=len(np.asarray(gmm.weights))) / len(k)


def mean_nll(gmm: GaussianMixture, x) -> float:
    """``-mean log p(x) / d`` in nats per dimension under the true law."""
    logp = np.logaddexp.reduce(component_log_probs(gmm, x), axis=1)
    return float(-np.mean(logp) / np.asarray(x).shape[1])
