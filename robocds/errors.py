"""User errors and how every console script reports them: one line, exit status 2, no traceback.

A *user error* is a problem with what the user gave: a file, a flag, a value, a recipe, a config, a
dataset or a checkpoint. Code that detects one raises a ``UserError`` (or a subclass such as
``robocds.datasets.errors.DatasetError``); the console scripts run their ``main`` through ``run_cli``,
which prints

    <program>: error: <what>: <why>

on stderr and exits with status 2. Any other exception is a bug and keeps its traceback.

This module imports nothing heavy (no torch, no pybullet), so every package may use it.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

USER_ERROR_STATUS = 2  # what argparse uses for a bad command line; the same for every user error
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports it


class UserError(Exception):
    """A problem with the user's input. Its message reads ``<what>: <why>``: the file, flag or field and
    its value first, then what is wrong with it (and, where there is one, what to do instead)."""


class ConfigError(UserError, ValueError):
    """A bad flag, option or setting value (also a ``ValueError``, like the settings checks it wraps)."""


class CheckpointError(UserError, ValueError):
    """A file given as a checkpoint that is missing, is not a checkpoint, or is not a robocds one."""


class DiskFullError(UserError, OSError):
    """A write that ran out of space (or quota). Reported in one line like a user error: there is nothing to
    debug, only space to free; every write is atomic, so what was finished is whole and a rerun resumes."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full(path: str | Path | None, error: OSError) -> DiskFullError:
    """The one-line report of ``error`` (ENOSPC / EDQUOT) while writing ``path``."""
    where = str(path or error.filename or "a file")
    return DiskFullError(
        f"{where}: {os.strerror(error.errno or errno.ENOSPC).lower()} while writing it; free some space and run "
        "again (the files already written are whole)"
    )


def user_error_in(error: BaseException) -> UserError | None:
    """The ``UserError`` that caused ``error``, following ``__cause__``/``__context__`` (libraries such as
    jsonargparse and Lightning re-raise our errors wrapped in their own). A full disk met by a write that
    is not ours (a logger's) counts as one too."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        if is_disk_full(current):
            return disk_full(None, current)  # type: ignore[arg-type]
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    A DataLoader worker's exception is re-raised by torch as ``Type("Caught Type in DataLoader worker
    process N.\\nOriginal Traceback ...\\nmodule.Type: <message>")``: the original message is its last line.
    """
    text = str(error).strip()
    if "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        text = last[len(prefix) :] if last.startswith(prefix) else last
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report_error(prog: str, message: str) -> None:
    """Print the one-line error report of ``prog`` on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], prog: str, argv: Sequence[str] | None = None
) -> NoReturn:
    """Run a console script's ``main(argv)`` and exit: its status, 2 after a user error, 130 after Ctrl-C."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_STATUS)
    except Exception as error:  # noqa: BLE001 - a user error is reported, anything else re-raised as it is
        cause = user_error_in(error)
        if cause is None:
            raise
        report_error(prog, one_line(cause))
        sys.exit(USER_ERROR_STATUS)
    sys.exit(status or 0)


# ----------------------------------------------------------------------------- checks before any work


def output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder, checked before any work: it may exist only as a folder, no part of
    it may be a file, and the nearest existing folder must be writable. Nothing is created here."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {str(out)!r}: exists and is not a folder")
    parent = out
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(out)!r}: {str(parent)!r} is not writable")
    return out


def repeated(values: Iterable[Any]) -> list[Any]:
    """The values that occur more than once in ``values``, sorted (empty: every value is listed once)."""
    listed = list(values)
    return sorted({value for value in listed if listed.count(value) > 1})


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an int >= ``low`` (argparse then reports a bad value as one line, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {low}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse
