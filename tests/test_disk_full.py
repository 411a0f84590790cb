"""A full disk: one line naming the file, exit 2, and every file that was whole before stays whole.

The unit tests inject ENOSPC; where the tests may mount a small tmpfs (root on Linux), generation also runs
out of real space and resumes byte for byte once space is freed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robocds.errors import DiskFullError, run_cli
from robocds.files import atomic_path, write_text_atomic

BIN = Path(sys.executable).parent


def enospc(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def test_a_full_disk_mid_write_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "last.ckpt"
    write_text_atomic(target, "whole")
    full = pytest.raises(DiskFullError, match=r"last\.ckpt: no space left on device")
    with full as caught, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise enospc()
    assert isinstance(caught.value, OSError)  # code that handles OSError still sees one
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_a_full_disk_met_by_a_write_that_is_not_ours_is_one_line(tmp_path, capsys):
    def main(argv):
        raise RuntimeError("the logger failed") from enospc(str(tmp_path / "metrics.csv"))

    with pytest.raises(SystemExit) as stop:
        run_cli(main, "robocds")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"robocds: error: {tmp_path / 'metrics.csv'}: no space left on device" in err


# ----------------------------------------------------------------------------- real small file systems


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of 60 KiB (resized with ``resize(kib)``); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root on Linux to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")

    def resize(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mount)], check=True)

    try:
        yield mount, resize
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def shard_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.tar"))}


def test_generation_on_a_full_disk_is_one_line_and_resumes_byte_for_byte(small_disk, tiny_root):
    disk, resize = small_disk
    command = [str(BIN / "robocds-generate"), "tiny", "--root", str(disk / "data"), "--workers", "2", "--no-progress"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr
    assert full.stderr.count("\n") == 1 and "no space left on device while writing" in full.stderr, full.stderr
    assert not [p for p in (disk / "data").rglob(".*") if p.is_file()], "a temporary file was left behind"
    resize(10_000)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert shard_digests(disk / "data") == shard_digests(tiny_root)
