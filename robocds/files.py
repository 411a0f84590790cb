"""Atomic file writes: a file appears complete or not at all (temp file in the same folder + ``os.replace``).

The one implementation every package uses (stdlib and ``robocds.errors`` only, so any layer may import it):
shards, manifests, summaries, reports, videos and pictures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robocds.errors import disk_full, is_disk_full

TEMP_SUFFIX = ".tmp"  # temporary files are hidden dot-files ending in this


def temp_name(final: Path) -> Path:
    """Hidden, process-unique temporary sibling of ``final``, ``.<name>.<pid>.tmp<suffix>``.

    It keeps the final suffix because writers choose the format from it (imageio, matplotlib).
    """
    return final.with_name(f".{final.name}.{os.getpid()}{TEMP_SUFFIX}{final.suffix}")


def stale_temps(folder: Path, name: str) -> list[Path]:
    """Leftovers of interrupted atomic writes of ``folder / name`` (also those of the older ``.<name>.<pid>.tmp``)."""
    return sorted(folder.glob(f".{name}.*{TEMP_SUFFIX}*"))


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` when the block succeeds.

    On an error the temporary file is removed and ``path`` is untouched; a full disk is raised as a
    ``DiskFullError`` naming ``path``. ``durable`` flushes the file and its folder to disk (for data that must
    survive a power cut, such as dataset shards).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full(final, error) from error  # type: ignore[arg-type]
        raise
    if durable:
        _fsync_dir(final.parent)


def write_bytes_atomic(path: str | Path, data: bytes, durable: bool = False) -> Path:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode(), durable)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
