"""How a fit writes its checkpoints: to a temporary sibling, then renamed over the old file.

Lightning's own save stages the file in the system temp folder and moves it into place; across file systems
that move is a copy, and a full disk leaves ``last.ckpt`` truncated where a valid one was. Here a failed
write (full disk, kill) leaves the previous checkpoint whole, and a full disk is a one-line ``DiskFullError``.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from robocds.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (``robocds.files.atomic_path``); remote ones as upstream."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()  # torch's own file writer reports a full disk as a RuntimeError; Python's as ENOSPC
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
