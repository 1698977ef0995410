"""Writing files (text, arrays, figures) whole or not at all.

Every file goes to a temporary name in the same directory and is renamed into place
(``os.replace`` is atomic on POSIX), so an interrupted run never leaves half a table.
"""

from __future__ import annotations

import os

import numpy as np


def write_atomic(path: str, text: str | bytes) -> str:
    """Writes ``text`` (or bytes) to ``path`` through a temporary file; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with (open(tmp, "wb") if isinstance(text, bytes) else open(tmp, "w", newline="")) as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def save_npy(path: str, array) -> str:
    """Saves ``array`` as ``path`` (``.npy``) through a temporary file; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, np.asarray(array))
    os.replace(tmp, path)
    return path


def save_npz(path: str, **arrays) -> str:
    """Saves ``arrays`` as ``path`` (``.npz``) through a temporary file; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path


def pyplot():
    """matplotlib's pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, workdir: str, name: str) -> dict[str, str]:
    """Saves ``fig`` as ``workdir/name`` (PNG) atomically and closes it."""
    path = os.path.join(workdir, name)
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    pyplot().close(fig)
    return {name: path}
