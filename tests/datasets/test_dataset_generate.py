"""Generation: round trip, determinism across worker counts, resume after kill -9 / Ctrl-C, shard ranges, URLs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
import yaml
from dataset_helpers import file_digests, interrupt_when

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import generate, main, plan_shards
from robocds.datasets.manifest import RECORD_SUFFIX, read_manifest, verify_dataset
from robocds.datasets.recording import record_episode
from robocds.datasets.replay import load_task_episodes
from robocds.datasets.schema import SAMPLE_KEYS, SCHEMA_VERSION
from robocds.envs.env import ManipulationEnv
from robocds.envs.tasks import TASK_NAMES
from robocds.errors import run_cli

ARRAYS = ("frames", "proprio", "actions", "task_rewards", "task_successes", "terminated", "truncated")


def test_round_trip_equals_what_was_recorded(tiny_root, tiny_recipe):
    """Episodes read back from the shards equal a fresh recording of the same episodes, array for array."""
    manifest = read_manifest(str(tiny_root))
    for task in ("lift-cube", "lift-cylinder"):
        spec = tiny_recipe.task(task)
        env = ManipulationEnv(task, image_size=tiny_recipe.image_size, max_steps=tiny_recipe.max_steps)
        try:
            for index in (0, spec.episodes - 1):
                expected = record_episode(env, spec.noise, tiny_recipe.base_seed, index)
                (got,) = load_task_episodes(str(tiny_root), manifest, task, range(index, index + 1))
                for name in (
                    "frames",
                    "proprio",
                    "actions",
                    "task_rewards",
                    "task_successes",
                    "terminated",
                    "truncated",
                ):
                    a, b = getattr(expected, name), getattr(got, name)
                    assert a.dtype == b.dtype and np.array_equal(a, b), (task, index, name)
                assert got.meta == expected.meta
        finally:
            env.close()


def test_manifest_describes_the_dataset(tiny_root, tiny_recipe):
    manifest = read_manifest(str(tiny_root))
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.task_names == tiny_recipe.task_names
    assert manifest.image_size == tiny_recipe.image_size and manifest.num_actions == 8
    assert manifest.reward_tasks == TASK_NAMES
    assert manifest.recipe == tiny_recipe.to_json_dict()
    stats = verify_dataset(str(tiny_root), manifest)
    for task in manifest.tasks:
        spec = tiny_recipe.task(task.name)
        assert task.episodes == spec.episodes == len(stats[task.name].lengths)
        assert task.transitions == sum(stats[task.name].lengths)
        assert task.success_rate == pytest.approx(np.mean(stats[task.name].successes))
        assert len(task.shards) == tiny_recipe.num_shards(task.name)
        assert all(len(shard.sha256) == 64 for shard in task.shards)
    assert max(t.success_rate for t in manifest.tasks) == 1.0  # the noise-free lift oracle succeeds


def test_shards_are_plain_webdataset_tars(tiny_root):
    """Any WebDataset reader opens the shards: one sample per episode with exactly the schema's members."""
    samples = list(wds.WebDataset(str(tiny_root / "lift-cube" / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["lift-cube-000000", "lift-cube-000001"]
    for sample in samples:
        assert {k for k in sample if not k.startswith("__")} == set(SAMPLE_KEYS)


@pytest.mark.parametrize("workers", [1, 2])
def test_same_bytes_whatever_the_worker_count(tiny_root, tiny_recipe, tmp_path, workers):
    """Worker processes (spawned) write byte-identical shards and manifest to the in-process run."""
    root = tmp_path / f"w{workers}"
    result = generate(tiny_recipe, str(root), workers=workers, progress=False)
    assert result.manifest_written and len(result.written) == len(plan_shards(tiny_recipe))
    assert file_digests(root) == file_digests(tiny_root)


def _cli(recipe: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robocds.datasets.generate", str(recipe), "--root", str(root), *extra]


def _one_shard_each(tmp_path: Path, tiny_recipe) -> Path:
    """The tiny recipe with one episode per shard: more shards, so a kill lands mid-run."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**tiny_recipe.to_json_dict(), "episodes_per_shard": 1}))
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_to_the_same_dataset(tiny_recipe, tmp_path, sig):
    """kill -9 (of the whole process group) or Ctrl-C mid-run: no partial shard is visible, and rerunning
    the same command keeps the finished shards and ends with the uninterrupted run's bytes."""
    recipe_path = _one_shard_each(tmp_path, tiny_recipe)
    reference = tmp_path / "reference"
    generate(tiny_recipe.with_overrides(episodes_per_shard=1), str(reference), workers=0, progress=False)

    root = tmp_path / "data"
    command = _cli(recipe_path, root, "--workers", "1")
    status, stderr = interrupt_when(command, lambda: len(list(root.glob("*/shard-*.tar"))) >= 2, sig)
    if sig == signal.SIGINT:
        assert status == 130 and b"rerun the same command to resume" in stderr
    finished = sorted(root.glob("*/shard-*.tar"))
    # A shard counts as finished once its record is written after it (a kill can fall in between).
    recorded = [path for path in finished if path.with_name(path.name + RECORD_SUFFIX).exists()]
    assert len(finished) - 1 <= len(recorded) <= len(finished)
    assert 2 <= len(finished) < len(plan_shards(tiny_recipe.with_overrides(episodes_per_shard=1)))
    assert not (root / "manifest.json").exists()
    for path in finished:  # whatever is visible is complete and final
        assert path.read_bytes() == (reference / path.relative_to(root)).read_bytes()
    # A stale temp file of the shard being written when killed (a kill -9 leaves one) is cleaned up.
    stale = root / "lift-cube" / ".shard-000003.tar.99999.tmp"
    stale.write_bytes(b"partial")

    rerun = subprocess.run(_cli(recipe_path, root, "--workers", "1"), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert f"{len(recorded)} kept from an earlier run" in rerun.stdout.decode()
    assert "episodes/s" in rerun.stdout.decode()  # the closing line reports episodes/s
    assert "\r" not in rerun.stderr.decode()  # stderr is a pipe, not a terminal: no progress bar in it
    assert not stale.exists() and not list(root.glob("*/.*"))
    assert file_digests(root) == file_digests(reference)


def test_an_interrupted_command_sees_the_ctrl_c_even_when_the_suite_ignores_it(tmp_path):
    """As in a suite started in the background: SIGINT ignored here must not be inherited by the command."""
    marker = tmp_path / "started"
    code = (
        "import pathlib, time\nfrom robocds.errors import run_cli\n"
        f"def main(argv):\n    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(20)\n"
        "run_cli(main, 'prog')\n"
    )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status, stderr = interrupt_when([sys.executable, "-c", code], marker.exists, signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert status == 130 and stderr == b"prog: interrupted\n"


def test_shard_ranges_compose_and_last_job_writes_the_manifest(tiny_root, tiny_recipe, tmp_path):
    root = tmp_path / "data"
    total = len(plan_shards(tiny_recipe))
    first = generate(tiny_recipe, str(root), workers=0, shard_range=range(0, 2), progress=False)
    assert len(first.written) == 2 and not first.manifest_written and not (root / "manifest.json").exists()
    second = generate(tiny_recipe, str(root), workers=0, shard_range=range(2, total), progress=False)
    assert second.manifest_written
    assert file_digests(root) == file_digests(tiny_root)
    again = generate(tiny_recipe, str(root), workers=0, progress=False)  # nothing left to do
    assert again.written == [] and len(again.skipped) == total


def test_a_root_of_another_recipe_is_refused(tiny_root, tiny_recipe, tmp_path, dataset_copy):
    with pytest.raises(DatasetError, match="different recipe"):
        generate(tiny_recipe.with_overrides(base_seed=1), str(dataset_copy), workers=0, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, "robocds-generate", ["tiny", "--root", str(tmp_path / "d"), "--shard-range", "9:99"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "robocds-generate: error: --shard-range='9:99': need 0 <= START < STOP <= 5 (the recipe has 5 shards)\n"
    )
    assert not (tmp_path / "d").exists()  # refused before anything was written
    assert main(["tiny", "--list"]) == 0
    assert "shard-000000.tar" in capsys.readouterr().out


def test_url_destination(tiny_root, tiny_recipe, tmp_path, monkeypatch):
    """Output to a URL goes through WebDataset's gopen (here a test scheme mapped onto a folder)."""
    folder = tmp_path / "bucket"

    def open_test_url(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
        path = folder / url.split("://", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, mode)

    monkeypatch.setitem(wds.gopen_schemes, "testfs", open_test_url)
    url = "testfs://data"
    result = generate(tiny_recipe, url, workers=0, progress=False)
    assert result.manifest_written
    assert file_digests(folder / "data") == file_digests(tiny_root)
    assert read_manifest(url) == read_manifest(str(tiny_root))


def test_a_failing_worker_stops_the_run_with_the_shard_named(tiny_recipe, tmp_path):
    root = tmp_path / "data"
    blocker = root / "lift-cube" / "shard-000001.tar"  # a folder where the shard must go: its rename fails
    (blocker / "x").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="failed in a worker on shard lift-cube/shard-000001.tar"):
        generate(tiny_recipe, str(root), workers=2, progress=False)
    assert not list(root.glob("*/.*.tmp")) and not (root / "manifest.json").exists()
