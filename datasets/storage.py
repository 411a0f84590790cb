"""Where shards live: local folders (atomic writes) or URLs (through WebDataset's ``gopen``), and tar I/O.

Local writes go to a hidden temporary name in the destination folder and are renamed into place
with ``os.replace`` once complete and flushed, so a reader never sees a partial shard or manifest.
URL destinations (``pipe:``, ``gs://``, ``http(s)://`` ...) are written in one stream per file with
whatever atomicity the destination gives; see ``docs/DATASETS.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from robocds.datasets.errors import DatasetError
from robocds.files import stale_temps
from robocds.files import write_bytes_atomic as write_file_atomic

TAR_USER = "robocds"  # fixed owner and mtime in tar headers: shards are byte-identical across runs
TAR_MTIME = 0


def is_url(root: str) -> bool:
    """Whether ``root`` is a URL for ``gopen`` rather than a local folder ('file:' URLs count as local)."""
    return ("://" in root and not root.startswith("file://")) or root.startswith("pipe:")


def local_path(root: str) -> Path:
    return Path(root[len("file://") :] if root.startswith("file://") else root)


def join(root: str, relpath: str) -> str:
    """``root``/``relpath`` for a folder or a URL."""
    if is_url(root):
        return root.rstrip("/") + "/" + relpath
    return str(local_path(root) / relpath)


def read_bytes(root: str, relpath: str) -> bytes:
    location = join(root, relpath)
    if is_url(root):
        with _gopen(location, "rb") as stream:
            return stream.read()
    return Path(location).read_bytes()


READ_CHUNK = 1 << 20  # bytes per read while hashing a file as it streams in


def read_hashed(location: str, digest: bool = True) -> tuple[bytes, str | None]:
    """The bytes of the file or URL ``location`` and their sha256 (None without ``digest``), hashed chunk
    by chunk as they arrive: one read of the file, no second pass over it."""
    hasher = hashlib.sha256() if digest else None
    chunks = []
    with _gopen(location, "rb") if is_url(location) else open(location, "rb") as stream:
        while chunk := stream.read(READ_CHUNK):
            if hasher is not None:
                hasher.update(chunk)
            chunks.append(chunk)
    return b"".join(chunks), hasher.hexdigest() if hasher is not None else None


def exists(root: str, relpath: str) -> bool:
    """Whether a finished file exists; unknowable for URLs in general, so False there (rewrite)."""
    return not is_url(root) and Path(join(root, relpath)).is_file()


def _gopen(url: str, mode: str):
    import webdataset as wds  # only for URLs: importing it loads torch, which local generation never needs

    return wds.gopen(url, mode)


def write_bytes_atomic(root: str, relpath: str, data: bytes) -> None:
    """Write ``data`` to ``root``/``relpath`` so that it appears complete or not at all (and durably, locally)."""
    if is_url(root):
        with _gopen(join(root, relpath), "wb") as stream:
            stream.write(data)
        return
    # durable: the rename must never expose a shard whose bytes are not on disk.
    write_file_atomic(join(root, relpath), data, durable=True)


def write_json_atomic(root: str, relpath: str, data: Any) -> None:
    write_bytes_atomic(root, relpath, (json.dumps(data, indent=1) + "\n").encode())


def remove_stale_temps(folder: Path, shard_names: Iterable[str]) -> int:
    """Delete leftovers of interrupted writes of the given shards; returns how many."""
    removed = 0
    for name in shard_names:
        for tmp in stale_temps(folder, name):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- tar files


def tar_bytes(samples: Iterable[dict[str, Any]]) -> bytes:
    """A WebDataset tar of encoded samples (``__key__`` plus suffix -> bytes): members ``<key>.<suffix>``.

    The layout of ``webdataset.TarWriter`` (USTAR, members of a sample consecutive and sorted by
    suffix) with fixed owner, mode and mtime, so the same samples always give the same bytes. Written
    with ``tarfile`` directly: generation workers then never import WebDataset (and with it torch).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for sample in samples:
            key = sample["__key__"]
            for suffix in sorted(name for name in sample if not name.startswith("__")):
                data = sample[suffix]
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
                info.uname = info.gname = TAR_USER
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is everything before the first dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    if not dot or not stem:
        return "", ""
    return (f"{folder}/{stem}" if folder else stem), suffix


def iter_tar_samples(data: bytes, source: str) -> Iterator[dict[str, Any]]:
    """Group a tar's members into samples (``__key__``, ``__url__`` and suffix -> bytes), like WebDataset.

    Raises ``DatasetError`` naming ``source`` (and the last sample key seen) for a truncated or
    corrupt archive, a non-file member, a member without a suffix, or a duplicate member.
    """
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                where = current["__key__"] if current else None
                if not member.isreg():
                    raise DatasetError(f"member {member.name!r} is not a regular file", source, where, "tar")
                key, suffix = split_member_name(member.name)
                if not key:
                    raise DatasetError(f"member {member.name!r} has no <key>.<suffix> name", source, where, "tar")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": source}
                if suffix in current:
                    raise DatasetError("duplicate member", source, key, suffix)
                extracted = archive.extractfile(member)
                assert extracted is not None
                content = extracted.read()
                if len(content) != member.size:
                    raise DatasetError("truncated tar: member shorter than its header says", source, key, suffix)
                current[suffix] = content
            # tarfile stops silently at a bad header after the first member; the rest must be zero padding.
            tail = data[archive.offset :]
            if len(tail) < 2 * tarfile.BLOCKSIZE:
                where = current["__key__"] if current else None
                raise DatasetError("truncated tar: no end-of-archive marker", source, where, "tar")
            if any(tail):
                where = current["__key__"] if current else None
                raise DatasetError(f"corrupt tar: unreadable header at byte {archive.offset}", source, where, "tar")
    except (tarfile.TarError, EOFError, OSError) as err:
        where = current["__key__"] if current else None
        raise DatasetError(f"truncated or corrupt tar ({type(err).__name__}: {err})", source, where, "tar") from None
    if current is not None:
        yield current
