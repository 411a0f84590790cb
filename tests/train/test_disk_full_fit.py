"""A fit that runs out of disk space: one ``DiskFullError`` naming the checkpoint, and the checkpoints saved
before it stay whole and loadable (Lightning's own save, staged in the system temp folder and moved into place,
left a truncated ``last.ckpt``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from test_cli_fit import base_config, fit  # noqa: F401 - the fixture is used by name

from robocds.checkpoint import load_checkpoint
from robocds.errors import DiskFullError

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def test_a_full_disk_during_a_fit_keeps_the_last_whole_checkpoint(base_config, tmp_path, monkeypatch):  # noqa: F811
    real_write_bytes = Path.write_bytes
    saves: list[str] = []

    def write_bytes(self: Path, data) -> int:
        if ".last.ckpt." in self.name:
            saves.append(self.name)
            if len(saves) > 1:  # the second epoch's last.ckpt: half of it fits, then the disk is full
                real_write_bytes(self, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(DiskFullError, match=r"last\.ckpt: no space left on device"):
        fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", "--trainer.max_steps=6")
    checkpoints = next((tmp_path / "runs").rglob("checkpoints"))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 3  # the first epoch's, whole
