"""robocds-inspect: verification, statistics, contact sheet and video."""

from __future__ import annotations

import cv2
import imageio.v2 as imageio
import pytest

from robocds.datasets.inspection import main
from robocds.errors import ConfigError


def test_inspect_prints_statistics_and_writes_media(tiny_root, tmp_path, capsys):
    out = tmp_path / "inspect"
    assert (
        main([str(tiny_root), "--out", str(out), "--no-progress", "--episodes", "lift-cube:1", "place-cube-blue:0"])
        == 0
    )
    text = capsys.readouterr().out
    for words in ("lift-cube", "lift-cylinder", "place-cube-blue", "action histogram", "success", "OK: 5 shards"):
        assert words in text
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 2 * 96  # two episode rows
    reader = imageio.get_reader(out / "episodes.mp4")
    frames = sum(1 for _ in reader)
    reader.close()
    assert frames >= 2 * 2  # every frame of both episodes


def test_inspect_rejects_bad_episode_references(tiny_root, capsys):
    with pytest.raises(ConfigError, match="episodes 0..3"):
        main([str(tiny_root), "--no-media", "--episodes", "lift-cube:99"])
    with pytest.raises(SystemExit):
        main([])
