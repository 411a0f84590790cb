"""robocds-export minari: the round trip through Minari, its env spec and metadata, streaming, resuming, errors."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from dataset_helpers import first_shard, interrupt_when, load, npy, rewrite_sample

import robocds.datasets.minari_export as minari_export
from robocds.datasets.errors import DatasetError
from robocds.datasets.export import main
from robocds.datasets.generate import generate
from robocds.datasets.manifest import read_manifest
from robocds.datasets.minari_export import export_minari
from robocds.datasets.recipe import recipe_from_dict
from robocds.datasets.replay import load_task_episodes
from robocds.envs.env import INFO_SUCCESS, INFO_TASK_REWARDS, INFO_TASK_SUCCESSES
from robocds.envs.registration import env_id
from robocds.errors import run_cli as run_main

minari = pytest.importorskip("minari", reason="the minari extra (pip install 'robocds[minari]') is not installed")

TASKS = ("lift-cube", "lift-cylinder", "place-cube-blue")  # the tiny recipe's


@pytest.fixture(scope="module")
def exported(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset exported to a fresh Minari root (read-only for the tests)."""
    out = tmp_path_factory.mktemp("minari") / "out"
    assert main(["minari", str(tiny_root), "--out", str(out), "--no-progress"]) == 0
    return out


def load_exported(out: Path, task: str, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    return minari.load_dataset(f"robocds/tiny/{task}-v0")


def episode_seeds(dataset) -> list[int]:
    return [int(m["seed"]) for m in dataset.storage.get_episode_metadata(range(dataset.total_episodes))]


def test_every_step_equals_the_projects_reader(tiny_root, exported, monkeypatch):
    manifest = read_manifest(str(tiny_root))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(exported))
    assert sorted(minari.list_local_datasets()) == [f"robocds/tiny/{task}-v0" for task in TASKS]
    for task in TASKS:
        dataset = load_exported(exported, task, monkeypatch)
        entry = manifest.task(task)
        assert (dataset.total_episodes, dataset.total_steps) == (entry.episodes, entry.transitions)
        own = manifest.reward_tasks.index(task)
        ours = load_task_episodes(str(tiny_root), manifest, task)
        theirs = list(dataset.iterate_episodes())
        assert len(theirs) == len(ours) == entry.episodes
        assert episode_seeds(dataset) == [e.meta.seed for e in ours]
        steps = 0
        for mine, exp in zip(ours, theirs):
            assert exp.id == mine.meta.episode
            np.testing.assert_array_equal(exp.observations["image"], mine.frames)
            np.testing.assert_array_equal(exp.observations["proprio"], mine.proprio)
            np.testing.assert_array_equal(exp.actions, mine.actions)
            np.testing.assert_array_equal(exp.rewards, mine.task_rewards[:, own])
            np.testing.assert_array_equal(exp.terminations, mine.terminated)
            np.testing.assert_array_equal(exp.truncations, mine.truncated)
            # Every task's reward and success, one row per state (row 0: the reset state).
            np.testing.assert_array_equal(exp.infos[INFO_TASK_REWARDS][1:], mine.task_rewards)
            np.testing.assert_array_equal(exp.infos[INFO_TASK_SUCCESSES][1:], mine.task_successes)
            np.testing.assert_array_equal(exp.infos[INFO_SUCCESS][1:], mine.terminated)
            assert exp.observations["image"].dtype == np.uint8 and exp.actions.dtype == np.int64
            steps += len(exp)
        assert steps == entry.transitions


def test_spaces_spec_and_recovered_env_reproduce_an_episode(tiny_root, tiny_recipe, exported, monkeypatch):
    """recover_environment() is the env that recorded the data: reset with an episode's seed and replay its
    actions, and the observations, rewards, flags and reset infos are the exported ones."""
    for task in TASKS:
        dataset = load_exported(exported, task, monkeypatch)
        settings = read_manifest(str(tiny_root)).env
        registered = gym.make(env_id(task), **settings.env_kwargs())
        assert dataset.observation_space == registered.observation_space
        assert dataset.action_space == registered.action_space
        registered.close()
        spec = dataset.spec.env_spec
        assert spec.id == env_id(task)
        expected = {"task": task, "image_size": 32, "max_steps": 12, "renderer": "tiny", "substeps": 12}
        assert spec.kwargs == {**expected, "camera": "front"} == {"task": task, **settings.env_kwargs()}

        env = dataset.recover_environment()
        for seed, episode in zip(episode_seeds(dataset), dataset.iterate_episodes()):
            obs, info = env.reset(seed=seed)
            for key in (INFO_TASK_REWARDS, INFO_TASK_SUCCESSES, INFO_SUCCESS):
                np.testing.assert_array_equal(episode.infos[key][0], info[key])  # the reset row is not made up
            np.testing.assert_array_equal(obs["image"], episode.observations["image"][0])
            if task != TASKS[0]:
                continue  # replaying one task's episodes is enough; the reset rows are checked for all
            for t, action in enumerate(episode.actions):
                obs, reward, terminated, truncated, info = env.step(int(action))
                np.testing.assert_array_equal(obs["image"], episode.observations["image"][t + 1])
                np.testing.assert_array_equal(obs["proprio"], episode.observations["proprio"][t + 1])
                assert (reward, terminated, truncated) == (
                    episode.rewards[t],
                    episode.terminations[t],
                    episode.truncations[t],
                )
                np.testing.assert_array_equal(info[INFO_TASK_REWARDS], episode.infos[INFO_TASK_REWARDS][t + 1])
        env.close()


def test_metadata_names_recipe_noise_seeds_and_manifest_hash(tiny_root, tiny_recipe, exported, monkeypatch):
    manifest = read_manifest(str(tiny_root))
    digest = hashlib.sha256((tiny_root / "manifest.json").read_bytes()).hexdigest()
    for task in TASKS:
        meta = load_exported(exported, task, monkeypatch).storage.metadata
        ours = meta["robocds"]
        entry = manifest.task(task)
        assert ours["manifest_sha256"] == digest
        assert recipe_from_dict(ours["recipe"]) == tiny_recipe
        noise = {"random_action_prob": entry.random_action_prob, "position_std": entry.position_std}
        assert ours["oracle_noise"] == [{"episodes": entry.episodes, **noise}]
        assert ours["base_seed"] == tiny_recipe.base_seed
        assert ours["env_settings"] == manifest.env.to_json_dict()
        assert ours["reward_tasks"] == list(manifest.reward_tasks)
        assert (ours["episodes"], ours["transitions"]) == (entry.episodes, entry.transitions)
        assert meta["jpeg_encoding"] is False and meta["data_format"] == "hdf5"
    assert json.loads((exported / "robocds" / "tiny" / "namespace_metadata.json").read_text())["description"]


def test_episodes_stream_one_at_a_time(tiny_root, tmp_path, monkeypatch):
    """When an episode has been handed to Minari, no earlier episode is still alive."""
    alive: list[weakref.ref] = []
    reader = minari_export.iter_task_episodes

    def tracked(*args, **kwargs):
        for episode in reader(*args, **kwargs):
            alive.append(weakref.ref(episode))
            yield episode

    def check(task: str, index: int) -> None:
        gc.collect()
        live = [ref() for ref in alive if ref() is not None]
        assert [e.meta.episode for e in live] == [index], f"{task}: episodes {[e.meta.episode for e in live]} alive"

    monkeypatch.setattr(minari_export, "iter_task_episodes", tracked)
    results = export_minari(str(tiny_root), tmp_path / "out", progress=False, on_episode=check)
    assert len(alive) == sum(r.episodes for r in results) == 9


def test_interrupted_export_keeps_finished_tasks_and_restarts_the_rest(tiny_root, exported, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def interrupt(task: str, index: int) -> None:
        if task == "lift-cylinder" and index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_minari(str(tiny_root), out, progress=False, on_episode=interrupt)
    namespace = out / "robocds" / "tiny"
    assert sorted(p.name for p in namespace.iterdir()) == ["lift-cube-v0"]  # the half-written task never appears
    assert not list(out.glob(".*.tmp"))  # Ctrl-C cleans its temporary root
    (out / ".lift-cylinder.999999.tmp" / "robocds").mkdir(parents=True)  # what kill -9 would leave
    finished = (namespace / "lift-cube-v0" / "data" / "main_data.hdf5").stat()

    results = export_minari(str(tiny_root), out, progress=False)
    assert [(r.task, r.kept) for r in results] == [(t, t == "lift-cube") for t in TASKS]
    assert (namespace / "lift-cube-v0" / "data" / "main_data.hdf5").stat().st_mtime_ns == finished.st_mtime_ns
    assert not list(out.glob(".*.tmp"))
    for task in TASKS:  # the resumed export holds what an uninterrupted one does
        resumed, fresh = load_exported(out, task, monkeypatch), load_exported(exported, task, monkeypatch)
        assert resumed.total_steps == fresh.total_steps
        for a, b in zip(resumed.iterate_episodes(), fresh.iterate_episodes()):
            np.testing.assert_array_equal(a.observations["image"], b.observations["image"])
            np.testing.assert_array_equal(a.actions, b.actions)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_export_shows_only_complete_tasks_and_a_rerun_finishes(sig, tiny_root, exported, tmp_path, monkeypatch):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "robocds.datasets.export", "minari", str(tiny_root), "--out", str(out)]
    first = out / "robocds" / "tiny" / "lift-cube-v0"
    status, stderr = interrupt_when(command, first.exists, sig)  # while a later task is being written
    if sig == signal.SIGINT:
        assert status == 130 and b"rerun the same command to resume" in stderr
        assert not list(out.glob(".*.tmp"))
    visible = sorted(p.name for p in (out / "robocds" / "tiny").glob("*-v0"))
    assert "lift-cube-v0" in visible and len(visible) < len(TASKS), visible  # killed mid-export
    for name in visible:  # whatever is visible is complete
        task = name[: -len("-v0")]
        steps = load_exported(exported, task, monkeypatch).total_steps
        assert load_exported(out, task, monkeypatch).total_steps == steps

    rerun = subprocess.run(command + ["--no-progress"], capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert "kept (exported earlier from the same manifest)" in rerun.stdout.decode()
    assert not list(out.glob(".*.tmp"))  # a kill -9's temporary root is deleted by the rerun
    for task in TASKS:
        resumed, fresh = load_exported(out, task, monkeypatch), load_exported(exported, task, monkeypatch)
        assert (resumed.total_episodes, resumed.total_steps) == (fresh.total_episodes, fresh.total_steps)
        for a, b in zip(resumed.iterate_episodes(), fresh.iterate_episodes()):
            np.testing.assert_array_equal(a.observations["image"], b.observations["image"])
            np.testing.assert_array_equal(a.rewards, b.rewards)


def test_refuses_to_mix_exports_of_different_datasets(tiny_root, exported, tmp_path):
    out = Path(shutil.copytree(exported, tmp_path / "out"))
    metadata = out / "robocds" / "tiny" / "lift-cube-v0" / "data" / "metadata.json"
    data = json.loads(metadata.read_text())
    data["robocds"]["manifest_sha256"] = "0" * 64
    metadata.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="holds an export of another dataset"):
        export_minari(str(tiny_root), out, progress=False)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        run_main(main, "robocds-export", ["minari", *args, "--no-progress"])
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no manifest", "manifest.json: missing"),
        ("unknown task", "task 'lift-sphere': not in dataset 'tiny'"),
        ("bad namespace", "namespace 'a b': not a valid Minari namespace"),
        ("out is a file", "exists and is not a folder"),
        ("corrupt shard", "lift-cube/shard-000000.tar: sample 'lift-cube-000000': field 'task_rewards.npy'"),
        ("minari missing", "minari: not installed"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(case, expected, dataset_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "minari"
    args = [str(dataset_copy), "--out", str(out)]
    if case == "no manifest":
        (dataset_copy / "manifest.json").unlink()
    elif case == "unknown task":
        args += ["--tasks", "lift-sphere"]
    elif case == "bad namespace":
        args += ["--namespace", "a b"]
    elif case == "out is a file":
        out.write_text("")
    elif case == "corrupt shard":

        def nan_reward(sample: dict) -> None:
            rewards = load(sample["task_rewards.npy"])
            rewards[0, 0] = np.nan
            sample["task_rewards.npy"] = npy(rewards)

        rewrite_sample(first_shard(dataset_copy), nan_reward)
    elif case == "minari missing":
        monkeypatch.setitem(sys.modules, "minari", None)  # what an install without the extra sees
    code, err = run_cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("robocds-export: error: ") and expected in lines[0], lines[0]
    if case == "corrupt shard":  # nothing of the bad task reached the output
        assert not (out / "robocds" / "tiny" / "lift-cube-v0").exists()
        assert not list(out.glob(".*.tmp"))


def test_a_mixture_records_its_noise_components_in_episode_order(tmp_path, monkeypatch):
    components = [
        {"episodes": 2, "random_action_prob": 0.9, "position_std": 0.03},
        {"episodes": 1, "random_action_prob": 0.0, "position_std": 0.0},
    ]
    recipe = recipe_from_dict(
        {"name": "mix", "image_size": 16, "max_steps": 4, "tasks": {"lift-cube": {"components": components}}}
    )
    generate(recipe, str(tmp_path / "data"), workers=0, progress=False)
    export_minari(str(tmp_path / "data"), tmp_path / "out", progress=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "out"))
    dataset = minari.load_dataset("robocds/mix/lift-cube-v0")
    assert dataset.storage.metadata["robocds"]["oracle_noise"] == components
    assert dataset.total_episodes == 3
