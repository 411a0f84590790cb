"""Reading checkpoints: always with ``weights_only=True``, and a file that is not one is called so.

``torch.load(..., weights_only=True)`` unpickles only tensors and plain containers, so a checkpoint
from elsewhere cannot run code when loaded (safe from torch 2.6 on, which fixed CVE-2025-32434).
robocds checkpoints hold nothing else (settings are stored as plain dicts, see ``robocds.config``).
Every failure is a ``CheckpointError`` naming the file: missing, not a checkpoint (random bytes, a
truncated archive), holding objects only a full unpickle could build, or not a ``MultiTaskCQL`` one.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from robocds.config import stored_cql
from robocds.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (the only format since torch 1.6)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _refusal_reason(error: BaseException) -> str:
    """What torch's weights-only unpickler refused (``Unsupported global: GLOBAL getattr``), without its advice:
    torch's message offers to retry with ``weights_only=False``, the unsafe path a user must not be sent down."""
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", str(error))
    if found is None:
        return "weights_only=True"
    reason = re.split(r" was not an allowed global|\. Please |\. Check ", found.group(1), maxsplit=1)[0]
    return f"weights_only=True: {reason.strip().rstrip('.')}"


def check_checkpoint_file(path: str | Path) -> Path:
    """``path`` if it is a file that starts like a torch checkpoint; a ``CheckpointError`` otherwise (cheap)."""
    file = Path(path)
    if not file.exists():
        raise CheckpointError(f"{file}: no such file")
    if not file.is_file():
        raise CheckpointError(f"{file}: not a checkpoint: it is a folder, not a file")
    with file.open("rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{file}: not a checkpoint (a checkpoint written by torch.save is a zip archive)")
    return file


def check_checksums(file: Path) -> None:
    """Every member's CRC-32 (the zip archive torch.save writes records one per member), which ``torch.load``
    never compares: a byte changed inside a tensor would otherwise be loaded and used without a word."""
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{file}: not a checkpoint: damaged or truncated ({_first_line(err)})") from None
    if bad is not None:
        raise CheckpointError(
            f"{file}: damaged: member {bad!r} does not match the checksum recorded for it (a changed byte)"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True``; it must be a Lightning checkpoint."""
    file = check_checkpoint_file(path)
    check_checksums(file)
    try:
        data = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{file}: refused: it holds Python objects that only a full unpickle could build, which could run code "
            f"({_refusal_reason(err)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{file}: not a checkpoint: damaged or truncated ({_first_line(err)})") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(f"{file}: not a Lightning checkpoint (no 'state_dict')")
    return data


def load_module(path: str | Path, map_location: str | torch.device = "cpu"):
    """A ``MultiTaskCQL`` rebuilt from the checkpoint's own hyperparameters, on ``map_location``."""
    from robocds.module import MultiTaskCQL

    file = Path(path)
    data = load_checkpoint(file)
    if not isinstance(data.get("hyper_parameters"), dict) or "num_tasks" not in data["hyper_parameters"]:
        raise CheckpointError(f"{file}: not a MultiTaskCQL checkpoint (no num_tasks among its hyperparameters)")
    cql = stored_cql(data["hyper_parameters"].get("cql"))  # a field the checkpoint predates: its value then
    try:
        return MultiTaskCQL.load_from_checkpoint(file, map_location=map_location, weights_only=True, cql=cql)
    except (TypeError, KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{file}: not a MultiTaskCQL checkpoint ({_first_line(err)})") from None
