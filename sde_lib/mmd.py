r"""The maximum mean discrepancy of samples to a Gaussian mixture, with the mixture's side exact.

With the Gaussian kernel ``k(u, v) = exp(-|u - v|^2 / (2 h^2))`` and ``z ~ N(m, S)``,

.. math:: E\,k(z, 0) = \det(I + S / h^2)^{-1/2}
          \exp\left(-\tfrac12 m^\top (S + h^2 I)^{-1} m\right),

so for data ``p = sum_a w_a N(mu_a, S_a)`` both data-side terms of

.. math:: \mathrm{MMD}^2(q, p) = E_{x, x' \sim q} k(x, x') - 2 E_{x \sim q, y \sim p} k(x, y)
          + E_{y, y' \sim p} k(y, y')

are closed forms: ``E_{y, y'} k = sum_ab w_a w_b E k(z_ab, 0)`` with ``z_ab ~ N(mu_a - mu_b,
S_a + S_b)``, and ``g(x) = E_y k(x, y) = sum_a w_a E k(z, 0)`` with ``z ~ N(x - mu_a, S_a)``.
Only the samples ``x_1 .. x_n`` of ``q`` are random: the estimate

.. math:: \widehat{\mathrm{MMD}^2} = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
          - \frac{2}{n} \sum_i g(x_i) + E_{y, y'} k

is unbiased for ``MMD^2(q, p)`` (zero in expectation when ``q = p``; it can be negative), and
has no Monte Carlo floor from a finite reference set of data samples. Its standard error is the
jackknife's over the samples (for a U-statistic it is conservative where ``q = p``, where the
estimate's variance is of order ``1 / n^2``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


class MixtureMMD(NamedTuple):
    """``mmd2`` and its jackknife standard error ``se``, each ``(H,)``: one per bandwidth."""

    mmd2: jax.Array
    se: jax.Array


def _gaussian_kernel_mean(m, S, h):
    """``E exp(-|z|^2 / (2 h^2))`` for ``z ~ N(m, S)``: ``m (..., K, d)``, ``S (K, d, d)`` (one
    covariance per last batch index of ``m``)."""
    d = m.shape[-1]
    A = S + h**2 * jnp.eye(d, dtype=S.dtype)[None]
    _, logdet = jnp.linalg.slogdet(A)
    quad = jnp.einsum("...kd,kde,...ke->...k", m, jnp.linalg.inv(A), m)
    logdet = logdet.reshape((1,) * (quad.ndim - 1) + logdet.shape)
    return jnp.exp(-0.5 * (logdet - d * jnp.log(h**2)) - 0.5 * quad)


def mixture_mmd(x: ArrayLike, gmm, bandwidths) -> MixtureMMD:
    """The unbiased ``MMD^2`` of samples ``x (n, d)`` to the mixture ``gmm`` (module docstring)
    for each Gaussian-kernel bandwidth ``h`` of ``bandwidths``, with its standard error.

    Raises:
      ValueError: ``x`` not ``(n, d)`` with ``n >= 3`` and ``gmm``'s ``d``; a bandwidth that is
        not positive.
    """
    x = jnp.asarray(x)
    d = gmm.means.shape[1]
    if x.ndim != 2 or x.shape[1] != d or x.shape[0] < 3:
        raise ValueError(f"x must be (n, d) with n >= 3 samples and d = {d} (the mixture's), "
                         f"got shape {x.shape}")
    hs = jnp.atleast_1d(jnp.asarray(bandwidths, x.dtype))
    if hs.ndim != 1 or not bool(jnp.all(hs > 0)):
        raise ValueError(f"bandwidths must be positive numbers, got {bandwidths!r}")
    return _mixture_mmd(x, gmm.weights.astype(x.dtype), gmm.means.astype(x.dtype),
                        gmm.covs.astype(x.dtype), hs)


@jax.jit
def _mixture_mmd(x, w, mu, S, hs):
    n = x.shape[0]
    sq = jnp.sum(x**2, 1)
    d2 = jnp.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0.0)
    off = 1.0 - jnp.eye(n, dtype=x.dtype)

    def one(h):
        K = jnp.exp(-d2 / (2 * h**2)) * off
        # data side, exact: E_{y,y'} k and g(x_i) = E_y k(x_i, y)
        K_ = mu.shape[0]
        pair = _gaussian_kernel_mean(
            (mu[:, None] - mu[None]).reshape(1, K_ * K_, -1),
            (S[:, None] + S[None]).reshape(K_ * K_, *S.shape[1:]), h).reshape(K_, K_)
        c = w @ pair @ w
        g = _gaussian_kernel_mean(x[:, None] - mu[None], S, h) @ w
        rows, total = jnp.sum(K, 1), jnp.sum(K)
        mmd2 = total / (n * (n - 1)) - 2.0 * jnp.mean(g) + c
        # leave-one-out estimates: the pairs without i, the mean of g without i
        loo = ((total - 2.0 * rows) / ((n - 1) * (n - 2))
               - 2.0 * (jnp.sum(g) - g) / (n - 1) + c)
        se = jnp.sqrt((n - 1) / n * jnp.sum((loo - jnp.mean(loo)) ** 2))
        return mmd2, se

    mmd2, se = jax.vmap(one)(hs)
    return MixtureMMD(mmd2, se)
