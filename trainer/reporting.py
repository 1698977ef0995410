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


def plain_log_ticks(ax, which: str = "xy") -> None:
    """Labels the log-scaled axes ``which`` of ``ax`` with plain numbers ("200", "0.05") in
    place of ``2×10²``: within one decade the multiples m × 10^k in view (evenly spaced values
    where fewer than three are), at 1, 2, 5 × 10^k over at most three decades, at powers of
    ten beyond. Call it once the data are drawn."""
    from matplotlib import ticker

    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if axis.get_scale() != "log":
            continue
        low, high = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
        decades = np.log10(high / low) if low > 0 else np.inf
        if decades < 1:  # within a decade: the multiples m 10^k in view, else evenly spaced
            k = np.floor(np.log10(low))
            ticks = [m * 10**j for j in (k, k + 1) for m in range(1, 10)
                     if low <= m * 10**j <= high]
            axis.set_major_locator(ticker.FixedLocator(ticks[::-(-len(ticks) // 6)])
                                   if len(ticks) >= 3 else ticker.MaxNLocator(nbins=5))
            axis.set_minor_locator(ticker.NullLocator())
        else:
            subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
            axis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def save_figure(fig, workdir: str, name: str) -> dict[str, str]:
    """Saves ``fig`` as ``workdir/name`` (PNG) atomically and closes it; the saved area is cut to
    what the figure draws (``bbox_inches="tight"``), so no label or legend outside the axes is
    cut off."""
    path = os.path.join(workdir, name)
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    pyplot().close(fig)
    return {name: path}
