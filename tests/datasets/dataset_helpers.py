"""Helpers for the dataset tests: digests of a dataset, and rewriting one sample of a shard."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from robocds.datasets.storage import iter_tar_samples, tar_bytes


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every shard and of the manifest, by path relative to ``root``."""
    paths = sorted(root.glob("*/shard-*.tar")) + [root / "manifest.json"]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def first_shard(root: Path, task: str = "lift-cube") -> Path:
    return root / task / "shard-000000.tar"


def rewrite_sample(shard: Path, change: Callable[[dict], None], index: int = 0) -> str:
    """Apply ``change`` to the raw sample ``index`` of ``shard`` (in place) and rewrite the tar; returns its key."""
    samples = list(iter_tar_samples(shard.read_bytes(), str(shard)))
    for sample in samples:
        sample.pop("__url__", None)
    change(samples[index])
    shard.write_bytes(tar_bytes(samples))
    return samples[index]["__key__"]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def object_npy(count: int) -> bytes:
    """An .npy header declaring an object array (which only unpickling could read), without any pickle."""
    buffer = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": (count,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(bytes(8 * count))  # never read: the reader must refuse at the header
    return buffer.getvalue()


def edit_manifest(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def default_sigint() -> None:
    """In a child, before it starts: Ctrl-C handled as usual. A suite run as a background job (``&``) hands its
    children an ignored SIGINT, and a Python started so never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(
    command: Sequence[str], ready: Callable[[], bool], sig: int, timeout: float = 120.0
) -> tuple[int, bytes]:
    """Run ``command`` in its own process group, send ``sig`` to the group once ``ready()`` holds, and
    return (exit status, stderr). Fails if the command ends, or ``timeout`` passes, before it is ready."""
    proc = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the command ended before it could be interrupted"
            assert time.monotonic() < deadline, "the command never got ready to be interrupted"
            time.sleep(0.005)
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr
