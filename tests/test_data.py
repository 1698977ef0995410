"""Data: the digits builder prepares offline, batches are deterministic and resumable, the global
batch splits across processes and devices, and a missing tfds dataset says how to prepare it."""

import socket
import sys

import chex
import jax
import numpy as np
import pytest

import sde_lib
from trainer import data
from trainer.config import default_section
from trainer.digits_builder import NUM_LEVELS, read_digits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data dir in which the digits were prepared with every network connection refused."""
    path = tmp_path_factory.mktemp("tfds")
    mp = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise OSError("network access attempted while preparing the digits")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    try:
        data.tfds_dataset("digits", "train", path)
    finally:
        mp.undo()
    return path


@pytest.fixture(scope="module")
def digits_train(data_dir):
    return data.tfds_dataset("digits", "train", data_dir)


def read_all(dataset):
    records = dataset.source.__getitems__(range(len(dataset)))
    return np.stack([r["x"] for r in records]), np.array([r["label"] for r in records])


def test_digits_prepare_offline_without_tensorflow(data_dir, digits_train):
    assert "tensorflow" not in sys.modules
    assert list((data_dir / "sklearn_digits" / "1.0.0").glob("*-train.array_record-*"))
    test = data.tfds_dataset("digits", "test", data_dir)
    assert (len(digits_train), len(test)) == (1500, 297)
    assert digits_train.data_shape == (8, 8, 1) and digits_train.num_levels == 17
    # The two splits are a partition of the 1,797 images with their labels.
    images, labels = read_digits()
    got = [read_all(digits_train), read_all(test)]
    x = np.concatenate([g[0] for g in got]).reshape(1797, 64)
    y = np.concatenate([g[1] for g in got])
    key = lambda imgs, lab: sorted(map(tuple, np.concatenate([imgs, lab[:, None]], 1)))
    assert key(x.astype(np.int64), y) == key(images.reshape(1797, 64).astype(np.int64), labels)
    # The prepared dataset is an ordinary tfds dataset, loadable by its tfds name.
    by_name = data.tfds_dataset("sklearn_digits", "test", data_dir)
    np.testing.assert_array_equal(read_all(by_name)[0], read_all(test)[0])


def test_missing_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError,
                       match=r"'mnist' is not prepared(.|\n)*tfds build mnist --data_dir="):
        data.tfds_dataset("tfds:mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="tfds dataset name, got 'no_such_dataset_xyz'"):
        data.load_dataset(default_section("data", name="no_such_dataset_xyz",
                                          data_dir=str(tmp_path)), "train")


def test_an_unprepared_builder_leaves_no_tfds_scratch_directory(tmp_path, monkeypatch):
    import tempfile

    import tensorflow_datasets as tfds

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # tfds itself leaves one empty tmp*tfds directory per construction on an unprepared dir...
    tfds.builder("mnist", data_dir=tmp_path / "bare")
    assert [p.name.endswith("tfds") for p in scratch.iterdir()] == [True]
    for p in scratch.iterdir():
        p.rmdir()
    # ... the loader and the offline builders remove theirs.
    with pytest.raises(data.DatasetNotPreparedError):
        data.tfds_dataset("tfds:mnist", "train", tmp_path / "loader")
    data.tfds_dataset("digits", "test", tmp_path / "packaged")
    assert list(scratch.iterdir()) == []


def test_split_name_is_checked(digits_train, data_dir):
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        data.tfds_dataset("digits", "validation", data_dir)
    with pytest.raises(ValueError, match="split of a synthetic dataset"):
        data.synthetic_dataset("ring", "validation")


def test_scaling_and_dequantization(digits_train):
    it = data.BatchIterator(digits_train, 1496, num_devices=8, shuffle=False)
    raw = read_all(digits_train)[0][:1496].astype(np.float64)
    x = it.batch_at(data.DataState())["x"].reshape(raw.shape)
    # DDPM scaling: v in {0..16} -> 2 v / 16 - 1, endpoints included.
    np.testing.assert_allclose(x, 2 * raw / (NUM_LEVELS - 1) - 1, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0
    dq = data.BatchIterator(digits_train, 1496, num_devices=8, shuffle=False, dequantize=True)
    xd = dq.batch_at(data.DataState())["x"].reshape(raw.shape).astype(np.float64)
    u = (xd + 1) / 2 * NUM_LEVELS - raw          # the noise: must lie in [0, 1) in v's own bin
    assert u.min() >= 0.0 and u.max() < 1.0
    # u ~ U[0, 1): mean 1/2, variance 1/12; n = 95,744 values give a standard error of
    # sqrt(1/12 / n) = 9.3e-4 on the mean, tested at 4.5 standard errors.
    assert abs(u.mean() - 0.5) < 4.5 * np.sqrt(1 / 12 / u.size)
    # Variance: Var[(u - 1/2)^2] = 1/80 - 1/144 = 1/180, so its SE is sqrt(1/180 / n) = 2.4e-4.
    assert abs(u.var() - 1 / 12) < 4.5 * np.sqrt(1 / 180 / u.size)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_deterministic_epochs_and_resume(digits_train):
    make = lambda seed=3, **kw: data.BatchIterator(digits_train, 256, seed=seed, num_devices=8,
                                                   **kw)
    it = make()
    assert it.batches_per_epoch == 5                   # 1500 // 256, the remainder dropped
    first = take(it, 12)                               # crosses two epoch boundaries
    chex.assert_trees_all_equal(first, take(make(), 12))   # same seed, same batches
    assert not np.array_equal(first[0]["x"], first[5]["x"])  # epoch 1 is in another order
    labels = lambda bs: np.concatenate([b["label"].ravel() for b in bs])
    assert not np.array_equal(labels(first[:5]), labels(first[5:10]))
    # Each epoch's order is a permutation, so its 5 * 256 batch rows are distinct examples.
    for e in range(2):
        perm = it.permutation(e)
        np.testing.assert_array_equal(np.sort(perm), np.arange(1500))
    assert not np.array_equal(make(seed=4).permutation(0), it.permutation(0))
    # Restoring the position continues exactly as the uninterrupted stream.
    it2 = make()
    take(it2, 7)
    saved = data.DataState.from_dict(it2.state.to_dict())
    assert saved == data.DataState(epoch=1, index=2)
    chex.assert_trees_all_equal(take(make(state=saved), 5), first[7:12])
    chex.assert_trees_all_equal(it.batch_at(data.DataState(0, 3)), first[3])


def test_batches_split_across_devices_and_processes(digits_train):
    kw = dict(seed=1, dequantize=True)
    whole = data.BatchIterator(digits_train, 64, num_devices=8, process_count=1, **kw)
    chex.assert_shape(whole.batch_at(whole.state)["x"], (8, 8, 8, 8, 1))
    chex.assert_shape(whole.batch_at(whole.state)["label"], (8, 8))
    parts = [data.BatchIterator(digits_train, 64, num_devices=4, process_index=p,
                                process_count=2, **kw) for p in range(2)]
    for _ in range(3):
        ref = whole.batch_at(whole.state)
        next(whole)
        got = [next(p) for p in parts]
        chex.assert_shape(got[0]["x"], (4, 8, 8, 8, 1))
        # Process 0 holds the first half of the global batch, process 1 the second, the
        # dequantization noise included.
        merged = jax.tree.map(lambda a, b: np.concatenate([a, b]), *got)
        chex.assert_trees_all_equal(merged, ref)


def test_bad_batch_arguments(digits_train):
    with pytest.raises(ValueError, match="must be divisible by process_count \\* num_devices"):
        data.BatchIterator(digits_train, 30)           # 8 host devices in the tests
    with pytest.raises(ValueError, match="divisible"):
        data.BatchIterator(digits_train, 24, num_devices=4, process_count=4, process_index=0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        data.BatchIterator(digits_train, 1600, num_devices=8)
    with pytest.raises(ValueError, match="process_index must be"):
        data.BatchIterator(digits_train, 16, num_devices=8, process_count=2, process_index=2)
    with pytest.raises(ValueError, match="global_batch_size must be an integer"):
        data.BatchIterator(digits_train, 0)


@pytest.mark.slow
def test_synthetic_gaussian_pair_splits():
    cfg = default_section("data", name="gaussian_pair", dim=4, num_train=4000, num_test=500, seed=7)
    train, test = data.load_dataset(cfg, "train"), data.load_dataset(cfg, "test")
    again = data.load_dataset(cfg, "train")
    np.testing.assert_array_equal(train.source.x, again.source.x)
    assert (len(train), len(test), train.data_shape, train.num_levels) == (4000, 500, (4,), None)
    assert not np.allclose(train.source.x[:500], test.source.x)
    # The oracle is the seeds' mixture with shifts drawn from fold_in(key(seed), 0).
    ref = sde_lib.gaussian_pair(jax.random.fold_in(jax.random.PRNGKey(7), 0), 4)
    chex.assert_trees_all_close(train.gmm.means, ref.means)
    # Sample mean within 4.5 standard errors of the mixture mean (per coordinate,
    # SE = sqrt(Var / n) with the mixture's exact variance).
    var = np.diag(np.asarray(train.gmm.covariance()))
    err = np.abs(train.source.x.mean(0) - np.asarray(train.gmm.mean()))
    assert np.all(err < 4.5 * np.sqrt(var / len(train)))
    it = data.BatchIterator(train, 80, num_devices=8)
    chex.assert_shape(next(it)["x"], (8, 10, 4))
    with pytest.raises(ValueError, match="dequantize=True needs an image dataset"):
        data.BatchIterator(train, 80, num_devices=8, dequantize=True)


@pytest.mark.slow
def test_create_iterators_for_the_2d_mixtures():
    for name in ("ring", "grid", "asymmetric_2d"):
        cfg = default_section("data", name=name, num_train=64, num_test=32)
        train, test = data.create_iterators(cfg, 16, num_devices=8)
        assert train.dataset.gmm.dim == 2 and train.shuffle and not test.shuffle
        chex.assert_shape(next(test)["x"], (8, 2, 2))
