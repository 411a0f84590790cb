"""Turning frames into things people look at: mp4 videos and contact-sheet PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np

from robocds.files import atomic_path


def upscale(frame: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 [H, W, 3] frame to [size, size, 3] (keeps pixels crisp)."""
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST)


def label(frame: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A copy of ``frame`` with ``text`` drawn in its top-left corner over a dark band."""
    out = frame.copy()
    height = max(10, out.shape[0] // 12)
    out[:height] = (out[:height] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (2, height - 3), cv2.FONT_HERSHEY_SIMPLEX, height / 30, color, 1, cv2.LINE_AA)
    return out


def overlay(
    view: np.ndarray,
    inset: np.ndarray,
    lines: Sequence[str],
    color: tuple[int, int, int] = (255, 255, 255),
    inset_fraction: float = 0.34,
) -> np.ndarray:
    """A viewer frame with ``inset`` (e.g. the policy's own frame) in its top-right corner and ``lines`` of text.

    ``view`` is uint8 [S, S, 3] (S >= 128 for legible text); the inset is scaled to ``inset_fraction`` of S
    with a white border; the text goes on a dark band along the bottom, one line per entry, sized to S.
    """
    out = view.copy()
    size = out.shape[0]
    side = int(size * inset_fraction)
    out[4 : side + 8, size - side - 8 : size - 4] = 255
    out[6 : side + 6, size - side - 6 : size - 6] = upscale(np.ascontiguousarray(inset), side)
    scale = size / 560  # 0.46 at 256 px: about 10-pixel-high letters
    line_height = max(12, int(size / 14))
    band = line_height * len(lines) + 6
    out[size - band :] = (out[size - band :] * 0.3).astype(np.uint8)
    for i, text in enumerate(lines):
        y = size - band + line_height * (i + 1)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 10, size: int = 256) -> Path:
    """Write uint8 [H, W, 3] frames as an H.264 mp4, upscaled to ``size``; atomic (temp file + rename)."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    with (
        atomic_path(path) as tmp,
        imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error") as writer,
    ):
        for frame in frames:
            writer.append_data(upscale(frame, size) if frame.shape[0] != size else frame)
    return Path(path)


def frame_grid(rows: Sequence[Sequence[np.ndarray]], size: int = 128, gap: int = 2) -> np.ndarray:
    """Tile rows of uint8 [H, W, 3] frames into one image; short rows are padded with black."""
    if not rows or not any(rows):
        raise ValueError("frame_grid: no frames")
    cols = max(len(row) for row in rows)
    sheet = np.zeros((len(rows) * (size + gap) - gap, cols * (size + gap) - gap, 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            y, x = r * (size + gap), c * (size + gap)
            sheet[y : y + size, x : x + size] = upscale(frame, size)
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, image)
    return Path(path)
