"""Writing results: tables (CSV and markdown) and figures, each written whole or not at all.

Every file goes to a temporary name in the same directory and is renamed into place
(``os.replace`` is atomic on POSIX), so an interrupted run never leaves half a table.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence

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


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, missing values as ``n/a``."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def summarize(runs, names) -> dict:
    """``{name: mean, name_sd: sd}`` over ``runs`` (dicts) for each of ``names``; the sd is
    ``None`` for a single run."""
    out = {}
    for name in names:
        values = np.array([r[name] for r in runs], float)
        out[name] = float(values.mean())
        out[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(workdir: str, name: str, rows: Sequence[Mapping],
                columns: Sequence[str]) -> dict[str, str]:
    """``<name>.csv`` and ``<name>.md`` in ``workdir``; returns their paths by file name."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{c: ("" if r.get(c) is None else r.get(c)) for c in columns}
                      for r in rows])
    return {f"{name}.csv": write_atomic(os.path.join(workdir, f"{name}.csv"), buf.getvalue()),
            f"{name}.md": write_atomic(os.path.join(workdir, f"{name}.md"),
                                       markdown_table(rows, columns))}


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
