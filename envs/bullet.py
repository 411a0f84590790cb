"""pybullet without its noise: the one place the project imports it and connects to it.

pybullet's C module prints ``pybullet build time: ...`` on stderr when it is imported, and ``argv[0]=`` on
stdout at every connection; a command's own output and its one-line error report should not be framed by
them. Both are written by C code below Python's ``sys.stdout``/``sys.stderr``, so the file descriptors
themselves are pointed at ``/dev/null`` for the duration (C's stdio buffers flushed before and after).
``BulletClient.__del__`` can also print an "Exception ignored" traceback when Ctrl-C lands in it, or when
the client was interrupted while connecting; ``QuietBulletClient`` closes quietly instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

try:
    _LIBC = ctypes.CDLL(None)
except OSError:  # no C library to flush (not on the platforms this project runs on)
    _LIBC = None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if _LIBC is not None:
        _LIBC.fflush(None)  # C's own stdout buffer, which holds a printf until it is flushed


@contextlib.contextmanager
def silenced(*fds: int) -> Iterator[None]:
    """Discard what C code writes to the file descriptors ``fds`` while the block runs."""
    saved = []
    try:
        _flush()
        saved = [(fd, os.dup(fd)) for fd in fds]
    except OSError:  # a descriptor that is closed: nothing to protect
        for _, copy in saved:
            os.close(copy)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd, _ in saved:
            os.dup2(devnull, fd)
        yield
    finally:
        _flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


with silenced(2):
    import pybullet
    import pybullet_data
    from pybullet_utils.bullet_client import BulletClient


class QuietBulletClient(BulletClient):
    """A ``BulletClient`` that connects without ``argv[0]=`` and whose clean-up never prints a traceback."""

    def __init__(self, connection_mode: int = pybullet.DIRECT) -> None:
        with silenced(1):
            super().__init__(connection_mode=connection_mode)

    def __del__(self) -> None:
        # Interrupted while connecting, the object has no _client (BulletClient.__getattr__ then raises); a
        # Ctrl-C can also land inside pybullet.disconnect. Either way the process is going: say nothing.
        try:
            if "_client" in self.__dict__:
                super().__del__()
        except BaseException:  # noqa: BLE001, S110 - a finalizer has nobody to report to
            pass


__all__ = ["BulletClient", "QuietBulletClient", "pybullet", "pybullet_data", "silenced"]
