"""Render the T x T sharing matrix as an RGB heatmap (for TensorBoard's image tab)."""

from __future__ import annotations

import textwrap
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
    names = list(task_names)
    # Sized so that 9 tasks with names like "place-cylinder-purple" stay legible at 100 dpi: the cells grow
    # with T, the label margin with the longest name, and the title wraps instead of being clipped.
    cell = 0.62
    margin = 0.085 * max(len(name) for name in names) + 0.8
    fig = Figure(figsize=(margin + cell * t + 1.6, margin + cell * t + 0.9), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(t), labels=names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(t), labels=names, fontsize=9)
    ax.set_xlabel("source task j", fontsize=10)
    ax.set_ylabel("target task i", fontsize=10)
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, width=int(11 * (cell * t + 1.6)))), fontsize=10)
    for i in range(t):
        for j in range(t):
            value = matrix[i, j]
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="black" if value > 0.6 else "white"
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
