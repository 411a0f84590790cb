"""robocds-generate --executor ray on a local Ray instance of 2 CPUs (``ray_local``; skipped without Ray, the
ray extra): one Ray task per shard, the manifest once every shard is finished, the bytes of a local generation,
a failed shard named."""

from __future__ import annotations

from pathlib import Path

import pytest

from robocds.datasets.generate import main
from robocds.errors import ConfigError


def all_files(root: Path) -> dict[Path, bytes]:
    return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_generation_on_ray_resumes_a_shard_range_and_equals_local_bytes(tiny_root, tmp_path, ray_local, capsys):
    root = tmp_path / "data"
    assert main(["tiny", "--root", str(root), "--executor", "ray", "--shard-range", "0:2", "--no-progress"]) == 0
    assert "2 shard(s) written, 0 kept" in capsys.readouterr().out and not (root / "manifest.json").exists()
    assert main(["tiny", "--root", str(root), "--executor", "ray", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 shard(s) written, 2 kept from an earlier run" in out and "manifest: " in out
    # Every file, the shards' records and recipe.json too, and nothing else left behind (no probe file):
    assert all_files(root) == all_files(tiny_root)


def test_a_failing_shard_task_stops_the_generation_with_the_shard_named(tiny_recipe, tmp_path, ray_local):
    from robocds.datasets.cluster import generate_on_ray

    root = tmp_path / "data"
    blocker = root / "lift-cube" / "shard-000001.tar"  # a folder where the shard must go: its rename fails
    (blocker / "x").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"failed in a Ray task on shard lift-cube/shard-000001.tar \(IsADirectory"):
        generate_on_ray(tiny_recipe, str(root), progress=False)
    assert not list(root.glob("*/.*.tmp")) and not (root / "manifest.json").exists()


def test_the_ray_options_need_the_ray_executor(tmp_path):
    with pytest.raises(ConfigError, match="^--address: only with --executor ray$"):
        main(["tiny", "--root", str(tmp_path / "data"), "--address", "auto"])
    assert not (tmp_path / "data").exists()
