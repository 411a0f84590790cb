"""Render the T x T sharing matrix as an RGB heatmap (for TensorBoard's image tab)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def sharing_heatmap(matrix: np.ndarray, task_names: Sequence[str], title: str = "") -> np.ndarray:
    """[T_tgt, T_src] matrix with values in [0, 1] -> uint8 RGB image [H, W, 3].

    Rows are target tasks i, columns source tasks j; each cell is annotated with its value.
    Uses a bare ``Figure`` and the Agg canvas, so no pyplot state or global backend is touched.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    t = matrix.shape[0]
    size = 1.6 + 0.55 * t
    fig = Figure(figsize=(size + 1.2, size), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(t), labels=list(task_names), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(t), labels=list(task_names), fontsize=7)
    ax.set_xlabel("source task j")
    ax.set_ylabel("target task i")
    if title:
        ax.set_title(title, fontsize=9)
    for i in range(t):
        for j in range(t):
            value = matrix[i, j]
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="black" if value > 0.6 else "white"
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
