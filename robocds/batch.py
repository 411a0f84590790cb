"""Checks and reshapes of training batches (the contract in ``robocds.datasets.schema``) and of observations."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_BOOTSTRAP_STEPS,
    BATCH_EPISODE_SUCCESSES,
    BATCH_IMAGE,
    BATCH_KEYS,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_SUCCESSES,
)


def check_batch(batch: Mapping[str, Tensor], num_tasks: int, image_size: int, proprio_dim: int) -> tuple[int, int]:
    """Check a training batch against the model's task count, image size and proprio size.

    Raises KeyError / ValueError naming the key, its shape and the expected shape. Returns (T, B).
    """
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise KeyError(f"batch lacks key(s) {missing}; it has {sorted(batch)}")
    action = batch[BATCH_ACTION]
    if action.ndim != 2:
        raise ValueError(f"batch[{BATCH_ACTION!r}] has shape {tuple(action.shape)}: expected [T, B]")
    t, b = action.shape
    if t != num_tasks:
        raise ValueError(
            f"batch[{BATCH_ACTION!r}] has shape {tuple(action.shape)}: its T={t} tasks differ from the model's "
            f"num_tasks={num_tasks} (check that data and model use the same task list)"
        )
    if action.dtype != torch.int64:
        raise ValueError(f"batch[{BATCH_ACTION!r}] has dtype {action.dtype}: expected torch.int64")
    expected = {
        BATCH_IMAGE: (t, b, 3, image_size, image_size),
        BATCH_NEXT_IMAGE: (t, b, 3, image_size, image_size),
        BATCH_PROPRIO: (t, b, proprio_dim),
        BATCH_NEXT_PROPRIO: (t, b, proprio_dim),
        BATCH_REWARDS: (t, b, t),
        BATCH_SUCCESSES: (t, b, t),
        BATCH_EPISODE_SUCCESSES: (t, b, t),
        BATCH_STEPS_TO_SUCCESS: (t, b, t),
        BATCH_BOOTSTRAP_STEPS: (t, b),
    }
    for key, shape in expected.items():
        if tuple(batch[key].shape) != shape:
            raise ValueError(
                f"batch[{key!r}] has shape {tuple(batch[key].shape)}: expected {list(shape)} "
                f"(T={t} tasks, B={b}, image_size={image_size}, proprio_dim={proprio_dim})"
            )
    for key in (BATCH_IMAGE, BATCH_NEXT_IMAGE):
        if batch[key].dtype != torch.uint8:
            raise ValueError(f"batch[{key!r}] has dtype {batch[key].dtype}: expected torch.uint8")
    return t, b


def flatten_rows(x: Tensor) -> Tensor:
    """[T, B, ...] -> [T * B, ...] (row-major: transition b of task t lands at t * B + b)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def as_chw_batch(image: Tensor | np.ndarray, image_size: int) -> Tensor:
    """Frames in either layout -> [N, 3, H, W].

    Accepts [N, 3, H, W] or [N, H, W, 3] (what the environment returns), or one frame [3, H, W] /
    [H, W, 3]. The layout is read from where the size-3 axis is; uint8 stays uint8.
    """
    x = torch.as_tensor(image)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"image has shape {tuple(x.shape)}: expected [N, 3, H, W] or [N, H, W, 3]")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1:] != (3, image_size, image_size):
        raise ValueError(
            f"image has shape {tuple(torch.as_tensor(image).shape)}: expected frames of "
            f"3 x {image_size} x {image_size} (channels first or last)"
        )
    return x.contiguous()
