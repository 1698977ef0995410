"""The 8x8 handwritten digits shipped inside scikit-learn, as an offline tfds dataset builder.

scikit-learn carries the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
Kaynak 1998): 1,797 images of 8x8 pixels with 17 grey levels (0 .. 16), as
``sklearn/datasets/data/digits.csv.gz``. ``SklearnDigits`` turns that file into a tfds dataset in
array_record format, with no download and no TensorFlow: ``_split_generators`` reads the file
from the installed package (located without importing scikit-learn) and splits it with a fixed
``jax.random`` permutation into 1,500 train and 297 test images.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import jax
import numpy as np
import tensorflow_datasets as tfds

from trainer.offline_builders import OfflineBuilder, package_file, prepared

NUM_IMAGES = 1797
NUM_TEST = 297
NUM_LEVELS = 17
SPLIT_SEED = 0


def digits_csv_path() -> pathlib.Path:
    """Path of ``digits.csv.gz`` inside the installed scikit-learn package."""
    return package_file("sklearn", "datasets", "data", "digits.csv.gz",
                        distribution="scikit-learn")


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: images ``(1797, 8, 8, 1)`` uint8 in ``0 .. 16`` and labels ``(1797,)``."""
    with gzip.open(digits_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_IMAGES, 65):
        raise ValueError(f"unexpected digits table shape {table.shape}, expected (1797, 65)")
    return table[:, :64].reshape(-1, 8, 8, 1).astype(np.uint8), table[:, 64]


def split_indices(seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Row indices of the train (1,500) and test (297) splits: a fixed random permutation."""
    perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(seed), NUM_IMAGES))
    return {"train": np.sort(perm[NUM_TEST:]), "test": np.sort(perm[:NUM_TEST])}


class SklearnDigits(OfflineBuilder):
    """tfds builder of scikit-learn's 8x8 digits: features ``image`` (8, 8, 1) uint8 in
    ``0 .. 16`` and ``label`` in ``0 .. 9``; splits ``train`` (1,500) and ``test`` (297)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn's digits.csv.gz, split 1500/297 with seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="UCI 8x8 handwritten digits as shipped in scikit-learn (17 grey levels).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
        )

    def read(self):
        return (*read_digits(), split_indices())


def get_digits_builder(data_dir: str | os.PathLike | None = None) -> SklearnDigits:
    """The digits builder in ``data_dir``, prepared there (offline, array_record) if it is not
    (once, under a file lock)."""
    return prepared(SklearnDigits, data_dir)
