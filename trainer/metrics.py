"""Where a run reports: TensorBoard event files (tensorboardX), the console and sample PNGs.

Only process 0 writes; every other process gets a writer that does nothing.
"""

from __future__ import annotations

import math
import os

import numpy as np

from trainer.reporting import pyplot, save_figure, write_atomic


class MetricWriter:
    """Scalars to TensorBoard event files in ``logdir`` and to ``csv_path`` (process 0 only).

    The CSV (``step,name,value`` rows) is the complete record: ``sync()`` (called before each
    checkpoint is saved) flushes it to disk, and also closes the event file and opens a new one
    (tensorboardX's ``flush`` does not drain its queue), so a run killed right after a
    checkpoint has logged every step up to it. A writer opened with ``resume_step`` first drops
    the CSV's rows after that step, which the resumed run logs again, so each step appears once.

    Args:
      logdir: directory of the event files.
      enabled: ``False`` makes every method a no-op (processes other than 0).
      csv_path: the CSV file, or ``None`` for event files only.
      resume_step: the step the run resumes from (rows after it are dropped).
    """

    def __init__(self, logdir: str, enabled: bool = True, csv_path: str | None = None,
                 resume_step: int | None = None):
        self.enabled, self.logdir, self.csv_path = enabled, logdir, csv_path
        self._writer = self._csv = None
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        self._open_events()
        if csv_path is not None:
            if os.path.exists(csv_path) and resume_step is not None:
                with open(csv_path) as f:
                    lines = f.readlines()
                keep = [ln for ln in lines[1:] if ln.strip() and ln.count(",") >= 2
                        and _int_or_none(ln.split(",", 1)[0]) is not None
                        and _int_or_none(ln.split(",", 1)[0]) <= resume_step]
                write_atomic(csv_path, "step,name,value\n" + "".join(keep))
            new = not os.path.exists(csv_path)
            self._csv = open(csv_path, "a")  # noqa: SIM115 (closed in close())
            if new:
                self._csv.write("step,name,value\n")

    def _open_events(self):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(self.logdir)

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(prefix + name, float(value), int(step))
            if self._csv is not None:
                self._csv.write(f"{int(step)},{prefix}{name},{float(value)!r}\n")
        self._writer.flush()
        if self._csv is not None:
            self._csv.flush()

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


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def save_samples_png(x: np.ndarray, path: str, title: str = "") -> str:
    """Writes samples as a PNG, atomically: a scatter plot of the first two coordinates for
    vector data ``(B, d)``, an image grid for images ``(B, H, W, C)`` in ``[-1, 1]``."""
    plt = pyplot()
    x = np.asarray(x, np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1 if x.shape[1] > 1 else 0], s=2, alpha=0.5)
        ax.set_aspect("equal")
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
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(grid[..., 0] if C == 1 else grid, cmap="gray" if C == 1 else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.axis("off")
    else:
        raise ValueError(f"samples must be (B, d) vectors or (B, H, W, C) images, got shape "
                         f"{x.shape}")
    if title:
        ax.set_title(title)
    save_figure(fig, os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    return path


def save_loss_png(csv_path: str, path: str) -> str | None:
    """The loss curve of a run from its ``metrics.csv``: the training loss at each logged step
    and the held-out ``eval/test_loss`` (markers), log scale where the losses are positive;
    written atomically. Nothing (``None``) without logged training losses."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    with open(csv_path) as f:
        next(f, None)
        for line in f:
            step, name, value = line.rstrip("\n").split(",", 2)
            if name in ("train/loss", "eval/test_loss"):
                steps, values = series.setdefault(name, ([], []))
                steps.append(int(step))
                values.append(float(value))
    if "train/loss" not in series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, label, style in (("train/loss", "training loss (one batch)", "-"),
                               ("eval/test_loss", "held-out loss", "o")):
        if name in series:
            ax.plot(*series[name], style, label=label, markersize=4)
    every = [v for _, values in series.values() for v in values]
    if every and min(every) > 0 and np.isfinite(every).all():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (the config's loss.name)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    return path
