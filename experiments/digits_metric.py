r"""Sample quality and baselines for the 8x8 digits: a classifier's Frechet distance, its class
histogram, and the bits/dim of the trivial models every likelihood should beat.

* ``Classifier``: a small MLP (64 -> 128 -> 64 features -> 10 classes, GELU) trained
  deterministically (fixed seed, full batch, Adam, ``STEPS`` steps) on the 1,500 training digits
  scaled to ``[-1, 1]``; ``load_classifier(cache_dir)`` trains it on first use and caches its
  parameters (written whole, through a temporary name), ``test_accuracy`` on the 297 test digits.
  Its 64 penultimate features play the role of Inception features in FID (Heusel et al. 2017).
* ``frechet_distance(f, g)``: ``|mu_f - mu_g|^2 + tr(S_f + S_g - 2 (S_f S_g)^{1/2})`` between the
  Gaussians fitted to two feature sets; ``frechet_interval`` adds its sd over bootstrap resamples
  of both sets; ``real_floor`` the distance of as many other real digits to the same reference
  (what a sampler of the true law would score: FD is biased upwards at finite n).
* ``class_histogram_tv(probs)``: the total-variation distance of the predicted-class histogram to
  uniform (a sampler that drops or favours digits scores high; the test split scores near 0).
* ``PixelModel``: the independent-pixel (factorized) categorical model of the 17 grey levels,
  fitted on the training digits with add-one smoothing: its bits/dim (``bits_per_dim``) and
  samples are the baseline a generative model must beat; ``uniform_bits_per_dim`` is the uniform
  code, ``log2(17) = 4.09``. ``log_density`` is the same model as a density on ``[-1, 1]``
  (constant on each level's bin), so ``sde_lib.bits_per_dim`` of it reproduces the closed form.
"""

from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from scipy import linalg

from trainer import data, reporting
from trainer.digits_builder import NUM_LEVELS, read_digits, split_indices

STEPS = 600  # full-batch Adam steps of the classifier
LR = 3e-3
SEED = 0
VERSION = 1  # bump when the architecture or training changes: a new cache file


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        f = nn.gelu(nn.Dense(64)(h))
        return f, nn.Dense(10)(f)


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images in ``[-1, 1]`` ``(n, 8, 8, 1)`` float32 and labels of the ``train`` or ``test``
    split (the same split as the tfds builder's)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = read_digits()
    rows = split_indices()[split]
    return data.scale_images(images[rows], NUM_LEVELS), labels[rows]


class Classifier:
    """The trained classifier: ``features(x)`` ``(n, 64)`` and ``probs(x)`` ``(n, 10)`` for images
    ``(n, 8, 8, 1)`` (or ``(n, 64)``) in ``[-1, 1]``."""

    def __init__(self, params):
        self.params = params
        self._apply = jax.jit(_MLP().apply)

    def features(self, x) -> np.ndarray:
        return np.asarray(self._apply(self.params, jnp.asarray(x, jnp.float32))[0], np.float64)

    def probs(self, x) -> np.ndarray:
        logits = self._apply(self.params, jnp.asarray(x, jnp.float32))[1]
        return np.asarray(jax.nn.softmax(logits), np.float64)

    def accuracy(self, x, labels) -> float:
        return float(np.mean(np.argmax(self.probs(x), 1) == np.asarray(labels)))


def train_classifier(seed: int = SEED, steps: int = STEPS) -> Classifier:
    """Trains the classifier on the training digits (deterministic given ``seed``)."""
    x, y = digits_split("train")
    x, y = jnp.asarray(x), jnp.asarray(y)
    model = _MLP()
    params = model.init(jax.random.key(seed), x[:1])
    opt = optax.adamw(LR, weight_decay=1e-4)
    state = opt.init(params)

    def loss(p):
        logits = model.apply(p, x)[1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
    return Classifier(params)


def load_classifier(cache_dir: str | None) -> Classifier:
    """The classifier from ``cache_dir`` (trained and cached there on first use; ``None``: not
    cached)."""
    if cache_dir is None:
        return train_classifier()
    path = os.path.join(cache_dir, f"digits_classifier_v{VERSION}_s{SEED}.msgpack")
    if os.path.exists(path):
        template = _MLP().init(jax.random.key(SEED), jnp.zeros((1, 64)))
        with open(path, "rb") as f:
            return Classifier(serialization.from_bytes(template, f.read()))
    clf = train_classifier()
    os.makedirs(cache_dir, exist_ok=True)
    reporting.write_atomic(path, serialization.to_bytes(clf.params))
    return clf


def test_accuracy(clf: Classifier) -> float:
    """Accuracy on the 297 test digits."""
    x, y = digits_split("test")
    return clf.accuracy(x, y)


def frechet_distance(f: np.ndarray, g: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``f (n, k)`` and ``g (m, k)``."""
    f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
    if f.ndim != 2 or g.ndim != 2 or f.shape[1] != g.shape[1] or min(len(f), len(g)) < 2:
        raise ValueError(f"f and g must be (n, k) feature sets with the same k and n >= 2, got "
                         f"{f.shape} and {g.shape}")
    mu, nu = f.mean(0), g.mean(0)
    s, t = np.cov(f, rowvar=False), np.cov(g, rowvar=False)
    # tr (S T)^{1/2} = sum sqrt(eig(S^{1/2} T S^{1/2})), a symmetric PSD matrix: stable when a
    # covariance is singular (fewer samples than features)
    lam, V = linalg.eigh(s)
    root_s = (V * np.sqrt(np.clip(lam, 0.0, None))) @ V.T
    cross = np.sqrt(np.clip(linalg.eigvalsh(root_s @ t @ root_s), 0.0, None)).sum()
    return float(np.sum((mu - nu) ** 2) + np.trace(s) + np.trace(t) - 2.0 * cross)


def frechet_interval(rng: np.random.Generator, f, g, num_bootstrap: int = 100
                     ) -> tuple[float, float]:
    """``(FD(f, g), its sd over bootstrap resamples of both sets)``."""
    f, g = np.asarray(f), np.asarray(g)
    boot = [frechet_distance(f[rng.integers(0, len(f), len(f))],
                             g[rng.integers(0, len(g), len(g))]) for _ in range(num_bootstrap)]
    return frechet_distance(f, g), float(np.std(boot, ddof=1))


def real_floor(rng: np.random.Generator, reference: np.ndarray, pool: np.ndarray, n: int,
               num_draws: int = 20) -> tuple[float, float]:
    """FD between ``n`` real feature vectors drawn without replacement from ``pool`` (real digits
    not in the reference, e.g. the training split) and ``reference``: mean and sd over
    ``num_draws`` draws: what a sampler of the true law would score against ``reference``."""
    if n > len(pool):
        raise ValueError(f"n must be at most len(pool) = {len(pool)}, got {n}")
    values = [frechet_distance(pool[rng.permutation(len(pool))[:n]], reference)
              for _ in range(num_draws)]
    return float(np.mean(values)), float(np.std(values, ddof=1))


def class_histogram_tv(probs: np.ndarray) -> float:
    """Total variation between the histogram of predicted classes and uniform over 10."""
    counts = np.bincount(np.argmax(np.asarray(probs), 1), minlength=10)
    return float(0.5 * np.abs(counts / counts.sum() - 0.1).sum())


class PixelModel:
    """Independent categorical distributions over the ``NUM_LEVELS`` grey levels of each pixel,
    fitted on integer training images ``(n, 8, 8, 1)`` with add-one (Laplace) smoothing."""

    def __init__(self, levels_train: np.ndarray, num_levels: int = NUM_LEVELS):
        v = np.asarray(levels_train).reshape(len(levels_train), math.prod(levels_train.shape[1:]))
        counts = np.stack([np.bincount(v[:, j], minlength=num_levels) for j in range(v.shape[1])])
        self.probs = (counts + 1.0) / (counts.sum(1, keepdims=True) + num_levels)  # (D, L)
        self.num_levels = num_levels
        self.shape = levels_train.shape[1:]

    def bits_per_dim(self, levels: np.ndarray) -> np.ndarray:
        """``-log2 p(v) / D`` per image of integer levels ``(n, 8, 8, 1)``."""
        v = np.asarray(levels).reshape(len(levels), -1)
        logp = np.log2(self.probs[np.arange(v.shape[1]), v]).sum(1)
        return -logp / v.shape[1]

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """The same model as a density on ``[-1 - h, 1 + h]`` (``h = 1 / (L - 1)``), constant on
        the bin of width ``2 h`` around each level: ``log p(x)`` in nats per image."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        width = 2.0 / (self.num_levels - 1)
        v = np.clip(np.rint((x + 1.0) / width), 0, self.num_levels - 1).astype(int)
        return (np.log(self.probs[np.arange(x.shape[1]), v]) - math.log(width)).sum(1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` images of integer levels ``(n, 8, 8, 1)``."""
        cdf = np.cumsum(self.probs, 1)
        u = rng.random((n, self.probs.shape[0], 1))
        v = np.minimum((u > cdf[None]).sum(2), self.num_levels - 1)
        return v.reshape(n, *self.shape)


def uniform_bits_per_dim(num_levels: int = NUM_LEVELS) -> float:
    """The uniform code over the grey levels: ``log2(L)`` bits per pixel."""
    return math.log2(num_levels)


def blur(x: np.ndarray) -> np.ndarray:
    """Each pixel replaced by the mean of its 3x3 neighbourhood (edges replicated): a degraded
    copy of real digits for checking that the metric sees it."""
    x = np.asarray(x)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9
