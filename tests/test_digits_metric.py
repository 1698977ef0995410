"""The digits sample-quality metric and baselines (``experiments.digits_metric``): the Frechet
distance against its closed form, the classifier's accuracy and caching, the metric's ordering
of real, factorized-pixel, blurred and noise images with intervals, and the baseline bits/dim
computed two ways."""

import math

import jax
import numpy as np
import pytest

import sde_lib
from experiments import digits_metric
from tests._sde_cases import Z
from trainer import data
from trainer.digits_builder import NUM_LEVELS, read_digits, split_indices


def _exact_moments(rng, mean, var, n):
    """``n`` points whose sample mean is ``mean`` and sample covariance ``diag(var)`` exactly."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened
    return mean + z * np.sqrt(var)


def test_frechet_distance_closed_form():
    """For feature sets whose sample moments are exactly (mu, diag(a)) and (nu, diag(b)) the
    distance is ``|mu - nu|^2 + sum (sqrt(a) - sqrt(b))^2``; it is 0 between a set and itself
    and symmetric."""
    rng = np.random.default_rng(0)
    k = 6
    mu, nu = rng.standard_normal(k), rng.standard_normal(k)
    a, b = rng.uniform(0.1, 2.0, k), rng.uniform(0.1, 2.0, k)
    f, g = _exact_moments(rng, mu, a, 500), _exact_moments(rng, nu, b, 300)
    want = np.sum((mu - nu) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(digits_metric.frechet_distance(f, g), want, rtol=1e-8)
    assert abs(digits_metric.frechet_distance(f, f)) < 1e-8
    np.testing.assert_allclose(digits_metric.frechet_distance(g, f),
                               digits_metric.frechet_distance(f, g), rtol=1e-8)
    with pytest.raises(ValueError, match="feature sets with the same k"):
        digits_metric.frechet_distance(f, g[:, :3])


def test_baseline_bits_per_dim_two_ways():
    """The independent-pixel model's bits/dim in closed form equals ``sde_lib.bits_per_dim`` of
    its density (constant on each level's bin) at uniformly dequantized test digits, to
    round-off; a model that knows nothing (uniform levels) gives the uniform code log2(17);
    and the fitted model beats it on held-out digits."""
    images, _ = read_digits()
    rows = split_indices()
    v_train, v_test = images[rows["train"]], images[rows["test"]]
    model = digits_metric.PixelModel(v_train)
    closed = model.bits_per_dim(v_test)
    half = 1.0 / (NUM_LEVELS - 1)
    data_range = (-1.0 - half, 1.0 + half)
    x = sde_lib.uniform_dequantize(jax.random.key(0), v_test, data_range, num_bins=NUM_LEVELS)
    via_density = sde_lib.bits_per_dim(model.log_density(np.asarray(x)), 64, data_range,
                                       num_bins=NUM_LEVELS)
    np.testing.assert_allclose(np.asarray(via_density), closed, rtol=1e-10)
    blank = digits_metric.PixelModel(v_train[:0])  # add-one smoothing alone: uniform
    np.testing.assert_allclose(blank.bits_per_dim(v_test), math.log2(17), rtol=1e-12)
    assert digits_metric.uniform_bits_per_dim() == math.log2(17)
    assert closed.mean() + Z * closed.std(ddof=1) / np.sqrt(len(closed)) < math.log2(17)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return digits_metric.load_classifier(str(tmp_path_factory.mktemp("clf")))


@pytest.mark.slow
def test_classifier_is_accurate_cached_and_deterministic(classifier, tmp_path):
    """Over 95% of the 297 test digits right (measured 98.3%); the cache reloads the same
    parameters, and training again from scratch gives the same bytes."""
    assert digits_metric.test_accuracy(classifier) > 0.95
    again = digits_metric.load_classifier(str(tmp_path))  # trains and caches
    reloaded = digits_metric.load_classifier(str(tmp_path))  # reads the cache
    x, _ = digits_metric.digits_split("test")
    np.testing.assert_array_equal(again.features(x), classifier.features(x))
    np.testing.assert_array_equal(reloaded.features(x), classifier.features(x))


@pytest.mark.slow
def test_the_metric_orders_real_pixel_blurred_and_noise(classifier):
    """Against the 297 test digits: 297 training digits score within the real floor's interval
    (a fresh draw: within Z sd of the floor's mean), then each of the factorized-pixel model's
    samples (measured FD about 100), blurred test digits (about 160) and uniform noise (about
    930) is worse than the one before by more than Z times their combined bootstrap sd; the
    class histogram of the test digits is near uniform (TV < 0.1), that of noise is not."""
    rng = np.random.default_rng(1)
    x_test, _ = digits_metric.digits_split("test")
    x_train, _ = digits_metric.digits_split("train")
    ref, pool = classifier.features(x_test), classifier.features(x_train)
    floor, floor_sd = digits_metric.real_floor(rng, ref, pool, len(ref))
    fresh = digits_metric.frechet_distance(pool[rng.permutation(len(pool))[:len(ref)]], ref)
    assert abs(fresh - floor) < Z * floor_sd, (fresh, floor, floor_sd)
    v_train = read_digits()[0][split_indices()["train"]]
    pixel = data.scale_images(digits_metric.PixelModel(v_train).sample(rng, len(ref)),
                              NUM_LEVELS)
    noise = rng.uniform(-1, 1, x_test.shape).astype(np.float32)
    sets = [(floor, floor_sd)] + [
        digits_metric.frechet_interval(rng, classifier.features(x), ref)
        for x in (pixel, digits_metric.blur(x_test), noise)]
    for (lo, lo_sd), (hi, hi_sd) in zip(sets[:-1], sets[1:], strict=True):
        assert hi - lo > Z * math.hypot(lo_sd, hi_sd), sets
    assert digits_metric.class_histogram_tv(classifier.probs(x_test)) < 0.1
    assert digits_metric.class_histogram_tv(classifier.probs(noise)) > 0.2


def test_beta_variance_cost_closed_form():
    """The ELBO's cost of the reverse variance beta over beta_tilde for Ho et al.'s linear
    schedule, from an independent numpy transcription of the chain: sum over i >= 1 of
    KL(N(0, beta_tilde_i) || N(0, beta_i)) per dimension in bits, 0.486."""
    from experiments import images

    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    r = (1 - ab[:-1]) / (1 - ab[1:])  # beta_tilde_i / beta_i, i = 1 .. 999
    want = np.sum(0.5 * (r - 1 - np.log(r))) / np.log(2)
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    np.testing.assert_allclose(images.beta_variance_cost(sde), want, rtol=1e-6)
    assert 0.48 < want < 0.49


def test_nearest_distances_and_memorization():
    """``nearest_distances`` against a brute-force loop; ``memorization``: copies of training
    images are all near-copies at distance 0, the test images themselves score the quantile
    (by construction: at most ``ceil(q n)`` of them lie at or below their own q-quantile),
    and points far from every training image score 0."""
    rng = np.random.default_rng(3)
    train, test = rng.normal(size=(300, 5, 5, 1)), rng.normal(size=(200, 5, 5, 1))
    x = rng.normal(size=(7, 5, 5, 1))
    brute = [min(np.linalg.norm((a - b).ravel()) for b in train) for a in x]
    np.testing.assert_allclose(digits_metric.nearest_distances(x, train, batch=3), brute,
                               rtol=1e-9)
    copies = digits_metric.memorization(train[:50], train, test, quantile=0.05)
    assert copies["near_copy_fraction"] == 1.0 and copies["median_nn"] < 1e-6
    assert copies["near_copy_se"] == 0.0
    held = digits_metric.memorization(test, train, test, quantile=0.05)
    assert 0.05 <= held["near_copy_fraction"] <= math.ceil(0.05 * 200) / 200 + 1e-12
    assert held["median_nn"] == held["test_median_nn"]
    far = digits_metric.memorization(test + 100.0, train, test, quantile=0.05)
    assert far["near_copy_fraction"] == 0.0
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\)"):
        digits_metric.memorization(test, train, test, quantile=1.0)


def test_image_sets_and_their_splits():
    """Both image sets read from their packages with their builders' splits: sizes, shapes,
    levels and classes; an unknown name is refused naming the valid ones."""
    for name, (n_train, n_test, shape, levels) in {
            "digits": (1500, 297, (8, 8, 1), 17), "mnist": (4000, 1000, (28, 28, 1), 256)}.items():
        spec = digits_metric.image_set(name)
        assert (spec.num_train, spec.num_test, spec.shape, spec.num_levels) == (
            n_train, n_test, shape, levels)
        x, labels = digits_metric.digits_split("test", name)
        assert x.shape == (n_test, *shape) and x.dtype == np.float32
        assert x.min() == -1.0 and x.max() == 1.0
        assert set(np.unique(labels)) == set(range(10))
    with pytest.raises(ValueError, match=r"dataset must be one of \['digits', 'mnist'\]"):
        digits_metric.image_set("cifar10")


@pytest.mark.slow
@pytest.mark.optimized  # 300 steps of a CNN: XLA's optimisations pay for themselves
def test_mnist_classifier_is_accurate_and_deterministic(tmp_path):
    """The MNIST CNN: over 95% of the 1,000 test digits right and cached; its training is
    deterministic (20 steps twice give the same bytes); its features separate real digits from
    the pixel model's samples by more than Z bootstrap sd's."""
    clf = digits_metric.load_classifier(str(tmp_path), "mnist")
    assert digits_metric.test_accuracy(clf) > 0.95
    reloaded = digits_metric.load_classifier(str(tmp_path), "mnist")
    x, _ = digits_metric.digits_split("test", "mnist")
    np.testing.assert_array_equal(reloaded.features(x[:100]), clf.features(x[:100]))
    short = [digits_metric.train_classifier(steps=20, dataset="mnist") for _ in range(2)]
    np.testing.assert_array_equal(short[0].features(x[:100]), short[1].features(x[:100]))
    rng = np.random.default_rng(0)
    spec = digits_metric.image_set("mnist")
    v_train, _ = spec.split("train")
    ref = clf.features(x)
    floor, floor_sd = digits_metric.real_floor(rng, ref, clf.features(
        digits_metric.digits_split("train", "mnist")[0]), 500, num_draws=5)
    pixel = data.scale_images(digits_metric.PixelModel(v_train, 256).sample(rng, 500), 256)
    fd, fd_sd = digits_metric.frechet_interval(rng, clf.features(pixel), ref, 20)
    assert fd - floor > Z * math.hypot(fd_sd, floor_sd), (fd, fd_sd, floor, floor_sd)
