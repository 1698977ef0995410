"""Where a run reports: TensorBoard event files (tensorboardX), the console and sample PNGs.

Only process 0 writes; every other process gets a writer that does nothing.
"""

from __future__ import annotations

import math
import os

import numpy as np

from experiments.reporting import pyplot, save_figure


class MetricWriter:
    """Scalars to TensorBoard event files in ``logdir`` and to the console (process 0 only).

    Args:
      logdir: directory of the event files.
      enabled: ``False`` makes every method a no-op (processes other than 0).
    """

    def __init__(self, logdir: str, enabled: bool = True):
        self.enabled = enabled
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(logdir, exist_ok=True)
            self._writer = SummaryWriter(logdir)

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(prefix + name, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


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
