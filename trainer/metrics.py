"""Where a run reports: TensorBoard event files (tensorboardX), the console and sample PNGs.

Only process 0 writes; every other process gets a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings

import numpy as np

from trainer.reporting import plain_log_ticks, pyplot, save_figure, write_atomic

HEADER = "step,name,value"
# a row as MetricWriter writes it: an integer step, a name without commas, a float's repr
_ROW = re.compile(r"(\d+),([^,\x00-\x1f\x7f]+),([^,\s]+)")


class MetricsRepairWarning(UserWarning):
    """A damaged ``metrics.csv`` was rewritten with the rows that could be read; the warning
    names the unreadable lines and the steps whose ``train/loss`` row is lost."""


class MetricWriter:
    """Scalars to TensorBoard event files in ``logdir`` and to ``csv_path`` (process 0 only).

    The CSV (``step,name,value`` rows) is the complete record: ``sync()`` (called before each
    checkpoint is saved) flushes it to disk, and also closes the event file and opens a new one
    (tensorboardX's ``flush`` does not drain its queue), so a run killed right after a
    checkpoint has logged every step up to it. Each ``(step, name)`` appears once: a writer
    opened on an existing CSV keeps its rows up to ``resume_step`` (the resumed run logs the
    later steps again), and a row written again (a rerun's evaluation of the step it resumed
    at) replaces the earlier one, the newest value winning.

    A damaged CSV (bytes that are not UTF-8, rows cut short or garbled: a full disk, a bad copy,
    a stray edit) is rewritten, atomically, with every row that can be read, and a
    ``MetricsRepairWarning`` names the unreadable lines and the steps of the ``log_every`` grid
    up to ``resume_step`` left without a ``train/loss`` row.

    Args:
      logdir: directory of the event files.
      enabled: ``False`` makes every method a no-op (processes other than 0).
      csv_path: the CSV file, or ``None`` for event files only.
      resume_step: the step the run resumes from (rows after it are dropped).
      log_every, steps_per_call: the run's logging grid (the training loop logs the first call
        end at or after each multiple of ``log_every``), which names the rows a damaged CSV
        lost; without ``log_every`` only the unreadable lines are named.
    """

    def __init__(self, logdir: str, enabled: bool = True, csv_path: str | None = None,
                 resume_step: int | None = None, log_every: int | None = None,
                 steps_per_call: int = 1):
        self.enabled, self.logdir, self.csv_path = enabled, logdir, csv_path
        self._writer = self._csv = None
        self._keys: set[tuple[int, str]] = set()
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        self._open_events()
        if csv_path is not None:
            if os.path.exists(csv_path):
                self._keys = _repair(csv_path, resume_step, log_every, steps_per_call)
            else:
                write_atomic(csv_path, HEADER + "\n")
            self._csv = open(csv_path, "a")  # noqa: SIM115 (closed in close())

    def _open_events(self):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(self.logdir)

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        rows = [(int(step), prefix + name, float(value)) for name, value in scalars.items()]
        for _, name, value in rows:
            self._writer.add_scalar(name, value, int(step))
        self._writer.flush()
        if self._csv is None:
            return
        again = {(s, name) for s, name, _ in rows} & self._keys
        if again:  # logged before: the earlier rows go, the newest value wins
            self._csv.close()
            kept, _ = read_metrics(self.csv_path)
            write_atomic(self.csv_path, _csv_text((s, n, v) for s, n, v in kept
                                                  if (s, n) not in again))
            self._csv = open(self.csv_path, "a")  # noqa: SIM115 (closed in close())
        for s, name, value in rows:
            self._csv.write(f"{s},{name},{value!r}\n")
            self._keys.add((s, name))
        self._csv.flush()

    def write_samples(self, step: int, x: np.ndarray, title: str = "",
                      reference: np.ndarray | None = None) -> None:
        """The samples' figure (``figure_samples``: a scatter plot over the reference data, or
        an image grid) as TensorBoard's ``samples`` image at ``step``."""
        if not self.enabled:
            return
        self._writer.add_figure("samples", figure_samples(x, title, reference), int(step),
                                close=True)
        self._writer.flush()

    def sync(self) -> None:
        """Everything written so far on disk: the CSV fsynced, the event file closed (a new
        one is opened for what follows)."""
        if not self.enabled:
            return
        if self._csv is not None:
            self._csv.flush()
            os.fsync(self._csv.fileno())
        self._writer.close()
        self._open_events()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None


def read_metrics(csv_path: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, int]]]:
    """The rows of a ``metrics.csv`` that can be read, whatever damage the file has.

    A row is a line ``step,name,value`` (an integer step, a name, a float) ended by a newline;
    a line that is not UTF-8, not such a row, or cut short (the end of the file without its
    newline) is unreadable.

    Returns:
      ``(rows, unreadable)``: the ``(step, name, value)`` of each row in file order, ``value``
      the text as written; for each unreadable line (the header excepted) its line number and
      the number of rows before it.
    """
    with open(csv_path, "rb") as f:
        lines = f.read().split(b"\n")
    rows, unreadable = [], []
    for number, line in enumerate(lines, 1):
        if number == len(lines):  # after the last newline: empty, or a row cut short
            if line:
                unreadable.append((number, len(rows)))
            break
        row = _parse_row(line)
        if row is not None:
            rows.append(row)
        elif not (number == 1 and line == HEADER.encode()):
            unreadable.append((number, len(rows)))
    return rows, unreadable


def _parse_row(line: bytes) -> tuple[int, str, str] | None:
    try:
        match = _ROW.fullmatch(line.decode("utf-8"))
        if match is None:
            return None
        float(match[3])
    except (UnicodeDecodeError, ValueError):
        return None
    return int(match[1]), match[2], match[3]


def _csv_text(rows) -> str:
    return HEADER + "\n" + "".join(f"{step},{name},{value}\n" for step, name, value in rows)


def _repair(csv_path: str, resume_step: int | None, log_every: int | None,
            steps_per_call: int) -> set[tuple[int, str]]:
    """Rewrites ``csv_path`` with its readable rows up to ``resume_step`` (the newest of each
    ``(step, name)``; nothing is written when that is the file as it is), warns when it was
    damaged; returns the ``(step, name)`` kept."""
    rows, unreadable = read_metrics(csv_path)
    end = resume_step if resume_step is not None else max((r[0] for r in rows), default=0)
    kept: dict[tuple[int, str], str] = {}
    for step, name, value in rows:
        if step <= end:
            kept.pop((step, name), None)
            kept[(step, name)] = value
    text = _csv_text((step, name, value) for (step, name), value in kept.items())
    with open(csv_path, "rb") as f:
        if f.read() != text.encode():
            write_atomic(csv_path, text)
    # the steps an unreadable line may have held: from the row before it to the row after it;
    # one among the rows after the resumed step (a row cut short by a kill) is dropped anyway
    spans, lines = [], []
    for number, before in unreadable:
        a = rows[before - 1][0] if before else 0
        b = rows[before][0] if before < len(rows) else None
        if a < end or (b is not None and b <= end):
            lines.append(number)
            spans.append((a, end if b is None else min(b, end)))
    logged = {step for step, name in kept if name == "train/loss"}
    spans.append((max(logged, default=0) + 1, end))  # a file that ends early
    lost = []
    if log_every:
        K = steps_per_call
        grid = sorted({s for a, b in spans for s in range(-(-max(a, 1) // K) * K, b + 1, K)
                       if s // log_every > (s - K) // log_every})
        lost = [s for s in grid if s not in logged]
    if lines or lost:
        plural = "s" * (len(lines) > 1)
        damage = [f"{len(lines)} unreadable line{plural} (line{plural} "
                  f"{_runs(lines, list(range(1, lines[-1] + 1)))})"] if lines else []
        if lost:
            damage.append(f"no train/loss row at step{'s' * (len(lost) > 1)} "
                          f"{_runs(lost, grid)} (log_every = {log_every})")
        warnings.warn(f"{csv_path} is damaged: {'; '.join(damage)}. Kept the {len(kept)} "
                      f"rows that could be read up to step {end}; the checkpoints are not "
                      f"affected", MetricsRepairWarning, stacklevel=3)
    return set(kept)


def _runs(values: list[int], grid: list[int], most: int = 8) -> str:
    """``values`` (sorted, in ``grid``) as runs of neighbours in ``grid``: ``"3, 7-9, 12"``."""
    position = {v: k for k, v in enumerate(grid)}
    runs: list[list[int]] = []
    for v in values:
        if runs and position[v] == position[runs[-1][-1]] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    text = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:most]]
    return ", ".join(text) + (f", ... ({len(runs) - most} more)" if len(runs) > most else "")


def _robust_limits(values: np.ndarray, q: float = 0.005,
                   margin: float = 0.25) -> tuple[float, float]:
    """The ``q`` .. ``1 - q`` quantiles of the finite ``values``, widened by ``margin`` of their
    span on each side: axis limits that one outlier cannot squeeze the cloud out of."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    low, high = np.quantile(finite, [q, 1.0 - q])
    pad = margin * (high - low) if high > low else max(abs(high), 1.0) * 0.5
    return float(low - pad), float(high + pad)


def figure_samples(x: np.ndarray, title: str = "", reference: np.ndarray | None = None):
    """The figure of ``save_samples_png`` (a matplotlib ``Figure``, not yet saved).

    Vector data ``(B, d)``: a scatter plot of the coordinates ``x[0]``, ``x[1]`` (a histogram of
    ``x[0]`` when ``d = 1``) over ``reference`` (optional, ``(M, d)``, e.g. held-out data) in
    grey; the limits are the 0.5% .. 99.5% quantiles with a margin, and the title says how many
    samples lie outside them. Images ``(B, H, W, C)`` in ``[-1, 1]``: a grid, row by row, with a
    grey scale bar for one channel.
    """
    plt = pyplot()
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        d = x.shape[1]
        ref = None if reference is None else np.asarray(reference, np.float32).reshape(-1, d)
        both = x if ref is None else np.concatenate([x, ref])
        fig, ax = plt.subplots(figsize=(4.4, 4.4))
        lims = [_robust_limits(both[:, k]) for k in range(min(d, 2))]
        inside = np.all([(x[:, k] >= a) & (x[:, k] <= b) for k, (a, b) in enumerate(lims)], 0)
        if d == 1:
            bins = np.linspace(*lims[0], 61)
            if ref is not None:
                ax.hist(ref[:, 0], bins=bins, density=True, color="0.6", alpha=0.6,
                        label=f"reference ({len(ref)})")
            ax.hist(x[:, 0], bins=bins, density=True, histtype="step", color="C0",
                    label=f"samples ({len(x)})")
            ax.set(xlim=lims[0], xlabel="x[0]", ylabel="density")
        else:
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=3, color="0.55", alpha=0.5, lw=0,
                           label=f"reference ({len(ref)})")
            ax.scatter(x[:, 0], x[:, 1], s=3, color="C0", alpha=0.6, lw=0,
                       label=f"samples ({len(x)})")
            ax.set(xlim=lims[0], ylim=lims[1], xlabel="x[0]", ylabel="x[1]")
        if ref is not None:
            ax.legend(loc="best", fontsize=7, markerscale=3)
        shown = {1: "coordinate x[0]", 2: "coordinates x[0], x[1]"}.get(
            d, f"first 2 of {d} coordinates")
        outside = int(len(x) - inside.sum())
        note = f"{shown}; {outside} of {len(x)} samples outside the axes" if outside else shown
        ax.set_title(f"{title}\n{note}" if title else note, fontsize=9)
        ax.grid(alpha=0.3)
    elif x.ndim == 4:
        n = x.shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        H, W, C = x.shape[1:]
        grid = np.ones((rows * (H + 1) + 1, cols * (W + 1) + 1, C), np.float32)
        images = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
        for k in range(n):
            r, c = divmod(k, cols)
            grid[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = \
                images[k]
        fig, ax = plt.subplots(figsize=(4.6, 4))
        image = ax.imshow(grid[..., 0] * 2.0 - 1.0 if C == 1 else grid,
                          cmap="gray" if C == 1 else None, vmin=-1.0, vmax=1.0,
                          interpolation="nearest")
        if C == 1:
            fig.colorbar(image, ax=ax, shrink=0.8, label="pixel value (data scale)")
        ax.set(xticks=[], yticks=[], xlabel=f"{cols} samples per row, {W} px each",
               ylabel=f"{rows} rows, {H} px each")
        note = f"{n} samples, {H}x{W}x{C}"
        ax.set_title(f"{title}\n{note}" if title else note, fontsize=9)
    else:
        raise ValueError(f"samples must be (B, d) vectors or (B, H, W, C) images, got shape "
                         f"{x.shape}")
    fig.tight_layout()
    return fig


def save_samples_png(x: np.ndarray, path: str, title: str = "",
                     reference: np.ndarray | None = None) -> str:
    """Writes samples as a PNG, atomically (``figure_samples``): a scatter plot of the first two
    coordinates for vector data ``(B, d)`` over the optional ``reference`` data in grey, an
    image grid for images ``(B, H, W, C)`` in ``[-1, 1]``; returns ``path``."""
    x = np.asarray(x, np.float32)
    if x.ndim not in (2, 4):
        raise ValueError(f"samples must be (B, d) vectors or (B, H, W, C) images, got shape "
                         f"{x.shape}")
    fig = figure_samples(x, title, reference)
    save_figure(fig, os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    return path


def loss_name_of(workdir: str) -> str | None:
    """The loss a run in ``workdir`` trains, from its ``config.json``: ``"dsm"``, or with a
    weighting ``"dsm, sigma2 weighting"``; ``None`` without a readable one."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            return loss_label(json.load(f).get("loss", {}))
    except (OSError, ValueError, AttributeError):
        return None


def loss_label(loss) -> str | None:
    """A config's loss section (a mapping) as the loss plot names it: ``"dsm"``, or
    ``"dsm, sigma2 weighting"``; ``None`` when it names no loss."""
    if not isinstance(loss, dict) or not isinstance(loss.get("name"), str):
        return None
    weighting = loss.get("weighting")
    return loss["name"] + (f", {weighting} weighting" if isinstance(weighting, str) else "")


def figure_loss(csv_path: str, loss_name: str | None = None):
    """The figure of ``save_loss_png`` (a matplotlib ``Figure``), or ``None`` without logged
    training losses. ``loss_name`` (default: the one in ``config.json`` beside ``csv_path``)
    names the loss on the y axis."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for step, name, value in read_metrics(csv_path)[0]:  # the rows that can be read
        if name in ("train/loss", "eval/test_loss"):
            steps, values = series.setdefault(name, ([], []))
            steps.append(step)
            values.append(float(value))
    if "train/loss" not in series:
        return None
    if loss_name is None:
        loss_name = loss_name_of(os.path.dirname(os.path.abspath(csv_path)))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, label, style in (("train/loss", "training loss (one batch)", "-"),
                               ("eval/test_loss", "held-out loss", "o")):
        if name in series:
            ax.plot(*series[name], style, label=label, markersize=4)
    every = [v for _, values in series.values() for v in values]
    if every and min(every) > 0 and np.isfinite(every).all():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{loss_name} loss" if loss_name else "training objective (the config's loss)")
    ax.set_title(f"loss curve{f' ({loss_name})' if loss_name else ''}: "
                 f"{os.path.basename(os.path.dirname(os.path.abspath(csv_path)))}", fontsize=9)
    plain_log_ticks(ax, "y")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_loss_png(csv_path: str, path: str, loss_name: str | None = None) -> str | None:
    """The loss curve of a run from its ``metrics.csv`` (``figure_loss``): the training loss at
    each logged step and the held-out ``eval/test_loss`` (markers), log scale where the losses
    are positive, the y axis named after ``loss_name`` (default: the loss of the
    ``config.json`` beside ``csv_path``); written atomically. Nothing (``None``) without logged
    training losses."""
    fig = figure_loss(csv_path, loss_name)
    if fig is None:
        return None
    save_figure(fig, os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    return path
