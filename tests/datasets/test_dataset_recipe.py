"""Recipes and the schema's JSON forms."""

from __future__ import annotations

import json

import pytest

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import generate, parse_shard_range, plan_shards
from robocds.datasets.manifest import read_manifest
from robocds.datasets.recipe import Recipe, TaskRecipe, load_recipe, packaged_recipes, recipe_from_dict
from robocds.datasets.schema import EpisodeMeta, Manifest, episode_from_key, episode_key
from robocds.envs.tasks import TASK_NAMES


def test_packaged_recipes_load():
    assert {"tiny", "benchmark"} <= set(packaged_recipes())
    tiny = load_recipe("tiny")
    assert tiny.image_size == 32 and tiny.total_episodes < 20


def test_benchmark_recipe_is_the_cds_setting():
    recipe = load_recipe("benchmark")
    assert set(recipe.task_names) == set(TASK_NAMES)  # every task of the suite
    sizes = [task.episodes for task in recipe.tasks]
    assert max(sizes) >= 5 * min(sizes)  # data-rich next to data-poor tasks
    noisy = [task for task in recipe.tasks if task.random_action_prob > 0.2 or task.position_std > 0.01]
    clean = [task for task in recipe.tasks if task.random_action_prob <= 0.1 and task.position_std == 0]
    assert noisy and clean  # good and poor behaviour


def test_recipe_json_round_trip_and_fingerprint(tiny_recipe):
    again = recipe_from_dict(json.loads(json.dumps(tiny_recipe.to_json_dict())))
    assert again == tiny_recipe
    assert again.fingerprint() == tiny_recipe.fingerprint()
    assert tiny_recipe.with_overrides(image_size=48).fingerprint() != tiny_recipe.fingerprint()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"name": "x", "tasks": {"lift-sphere": {"episodes": 2}}}, "tasks.lift-sphere", "unknown task"),
        ({"name": "x", "tasks": {"lift-cube": {"episodes": 0}}}, "tasks.lift-cube", "episodes=0"),
        ({"name": "x", "tasks": {"lift-cube": {"episodes": 2, "noise": 1}}}, "tasks.lift-cube.noise", "unknown"),
        ({"name": "x", "tasks": {"lift-cube": {"episodes": 2, "random_action_prob": 2}}}, "tasks.lift-cube", "[0, 1]"),
        ({"name": "x", "tasks": {}}, "tasks", "non-empty"),
        ({"name": "x", "tasks": {"lift-cube": {"episodes": 2}}, "image_sise": 3}, "image_sise", "unknown field"),
    ],
)
def test_bad_recipe_names_the_field(data, field, words):
    with pytest.raises(DatasetError) as info:
        recipe_from_dict(data, "bad.yaml")
    assert info.value.source == "bad.yaml" and info.value.field == field
    assert words in str(info.value)


def test_bad_top_level_settings():
    task = TaskRecipe("lift-cube", 2)
    with pytest.raises(ValueError, match="image_size=4"):
        Recipe("x", (task,), image_size=4)
    with pytest.raises(ValueError, match="renderer='opengl'"):
        Recipe("x", (task,), renderer="opengl")
    with pytest.raises(ValueError, match="listed more than once"):
        Recipe("x", (task, task))
    with pytest.raises(DatasetError, match="not a packaged recipe"):
        load_recipe("no-such-recipe")


def test_shard_plan_and_ranges(tiny_recipe):
    jobs = plan_shards(tiny_recipe)
    per_task = {name: [j for j in jobs if j.task == name] for name in tiny_recipe.task_names}
    for name, task_jobs in per_task.items():
        assert sum(j.episodes for j in task_jobs) == tiny_recipe.task(name).episodes
        assert [j.first_episode for j in task_jobs] == [
            i * tiny_recipe.episodes_per_shard for i in range(len(task_jobs))
        ]
    assert [j.global_index for j in jobs] == list(range(len(jobs)))
    assert parse_shard_range("1:3", len(jobs)) == range(1, 3)
    assert parse_shard_range(":2", len(jobs)) == range(0, 2)
    assert parse_shard_range("2:", len(jobs)) == range(2, len(jobs))
    for bad in ("3", "2:1", f"0:{len(jobs) + 1}", "a:b"):
        with pytest.raises(ValueError, match="--shard-range"):
            parse_shard_range(bad, len(jobs))


def test_episode_keys():
    assert episode_from_key(episode_key("place-cube-blue", 12)) == 12
    assert episode_from_key("nonsense") == -1


def test_meta_json_is_type_checked():
    meta = EpisodeMeta(1, "lift-cube", 0, 5, 6, 0.0, 0.0, 3, True, 1.0, 32, TASK_NAMES)
    data = meta.to_json_dict()
    assert EpisodeMeta.from_json_dict(json.loads(json.dumps(data))) == meta
    with pytest.raises(DatasetError) as info:
        EpisodeMeta.from_json_dict({**data, "length": "3"}, "s.tar", "k")
    assert (info.value.source, info.value.key, info.value.field) == ("s.tar", "k", "meta.json:length")
    with pytest.raises(DatasetError, match="missing"):
        EpisodeMeta.from_json_dict({k: v for k, v in data.items() if k != "seed"})


def test_manifest_json_round_trip(tiny_root):
    data = json.loads((tiny_root / "manifest.json").read_text())
    manifest = Manifest.from_json_dict(data)
    assert manifest.to_json_dict() == data


def test_the_camera_is_part_of_the_recipe_and_of_what_it_records(tmp_path, tiny_recipe):
    wrist = tiny_recipe.with_overrides(camera="wrist")
    assert "camera" not in tiny_recipe.to_json_dict()  # front: the form (and fingerprint) it always had
    assert wrist.to_json_dict()["camera"] == "wrist" and wrist.env.camera == "wrist"
    assert wrist.fingerprint() != tiny_recipe.fingerprint()
    assert recipe_from_dict(json.loads(json.dumps(wrist.to_json_dict()))) == wrist
    with pytest.raises(DatasetError, match="camera='drone'"):
        recipe_from_dict({"name": "x", "tasks": {"lift-cube": {"episodes": 1}}, "camera": "drone"}, "bad.yaml")
    one = Recipe("one", (TaskRecipe("lift-cube", 1),), image_size=32, max_steps=3, camera="wrist")
    generate(one, str(tmp_path / "wrist"), progress=False)
    manifest = read_manifest(str(tmp_path / "wrist"))
    assert manifest.env.camera == "wrist" and manifest.recipe["camera"] == "wrist"


def test_the_learning_recipes_use_the_wrist_camera_and_tiny_keeps_the_front_one():
    for name in ("quickstart", "benchmark_cpu", "benchmark_cpu_borrow", "benchmark_cpu_replay", "benchmark"):
        assert load_recipe(name).camera == "wrist", name
    assert load_recipe("tiny").camera == "front"  # the smoke recipe keeps the fixed camera's path exercised
