"""Replay-like recipes: a task recorded as a mixture of oracle noise levels."""

from __future__ import annotations

import json

import pytest
from dataset_helpers import file_digests

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import generate
from robocds.datasets.inspection import component_lines
from robocds.datasets.manifest import read_manifest, verify_dataset
from robocds.datasets.recipe import NoiseComponent, TaskRecipe, load_recipe, recipe_from_dict
from robocds.datasets.replay import load_task_episodes, split_episodes

MIXTURE = {
    "name": "mixture",
    "image_size": 32,
    "max_steps": 6,
    "episodes_per_shard": 2,
    "tasks": {
        "lift-cube": {
            "components": [
                {"episodes": 2, "random_action_prob": 0.9, "position_std": 0.03},
                {"episodes": 1, "random_action_prob": 0.0},
            ]
        },
        "lift-block": {"episodes": 1, "random_action_prob": 0.2},
    },
}


def test_components_lay_out_episodes_in_order():
    task = recipe_from_dict(MIXTURE).task("lift-cube")
    assert task.episodes == 3  # the components' sum when episodes is not given
    assert [task.component_of(i) for i in range(3)] == [0, 0, 1]
    assert task.noise_of(1).random_action_prob == 0.9 and task.noise_of(2).random_action_prob == 0.0
    with pytest.raises(ValueError, match="episode=3"):
        task.component_of(3)


def test_mixture_generation_is_deterministic_and_records_each_episodes_noise(tmp_path):
    recipe = recipe_from_dict(MIXTURE)
    generate(recipe, str(tmp_path / "a"), workers=0, progress=False)
    generate(recipe, str(tmp_path / "b"), workers=2, progress=False)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")  # byte-identical, any worker count

    manifest = read_manifest(str(tmp_path / "a"))
    assert recipe_from_dict(manifest.recipe) == recipe  # every component is recorded in the manifest
    episodes = load_task_episodes(str(tmp_path / "a"), manifest, "lift-cube", range(3))
    assert [(e.meta.random_action_prob, e.meta.position_std) for e in episodes] == [(0.9, 0.03), (0.9, 0.03), (0, 0)]
    assert len({e.meta.seed for e in episodes}) == 3  # every episode keeps its own seed
    assert manifest.task("lift-cube").random_action_prob == pytest.approx(0.6)  # episode-weighted mean

    lines = component_lines(manifest, verify_dataset(str(tmp_path / "a")))
    assert lines[1] == "lift-cube: success per noise component (in episode order)"
    assert lines[2].startswith("  0: episodes 0-1, noise (0.9, 0.03): success ") and lines[2].endswith("of 2")
    assert lines[3].startswith("  1: episodes 2-2, noise (0, 0): success ") and lines[3].endswith("of 1")
    assert not any("lift-block" in line for line in lines)  # a single level has no component table


def test_single_level_recipes_keep_their_fingerprint():
    # Measured before mixtures existed: datasets generated then are still recognised as the same recipe.
    assert load_recipe("tiny").fingerprint() == "42b4a0ade67696a2df36dc748bc1ab4c5f386cadae5b616e75a442049a580528"
    # benchmark_cpu through the front camera, the only one before recipes named theirs (now: wrist).
    assert load_recipe("benchmark_cpu").with_overrides(camera="front").fingerprint() == (
        "62e00b5c8fcc2a52a385789e6db83f7f739d757ffbba8126b5e0d983f070c247"
    )
    mixture = recipe_from_dict(MIXTURE)
    assert recipe_from_dict(json.loads(json.dumps(mixture.to_json_dict()))) == mixture


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"components": []}, "tasks.lift-cube.components", "non-empty list"),
        ({"components": [{"episodes": 0}]}, "tasks.lift-cube.components[0]", "episodes=0"),
        ({"components": [{"episodes": 2, "noise": 1}]}, "tasks.lift-cube.components[0].noise", "unknown field"),
        ({"components": [{"episodes": 2, "random_action_prob": 2.0}]}, "tasks.lift-cube.components[0]", "2.0"),
        ({"episodes": 5, "components": [{"episodes": 2}]}, "tasks.lift-cube", "components hold 2"),
        ({"random_action_prob": 0.1, "components": [{"episodes": 2}]}, "tasks.lift-cube", "not both"),
    ],
)
def test_bad_components_are_named(spec, field, words):
    with pytest.raises(DatasetError, match=words) as info:
        recipe_from_dict({"name": "bad", "tasks": {"lift-cube": spec}}, "bad.yaml")
    assert field in str(info.value) and "bad.yaml" in str(info.value)


def test_task_recipe_checks_component_types():
    with pytest.raises(ValueError, match="NoiseComponent"):
        TaskRecipe("lift-cube", 2, components=({"episodes": 2},))
    assert TaskRecipe("lift-cube", 2, components=(NoiseComponent(2, 0.5),)).noise_of(1).random_action_prob == 0.5


def test_held_out_episodes_are_spread_over_every_component():
    """Components lay episodes out near-random first: holding out the last ones would hold out only the best
    component (and train without it). The split takes one episode from the middle of every equal stretch."""
    replay_like = recipe_from_dict(
        {
            "name": "replay-like",
            "tasks": {
                "lift-cube": {
                    "components": [
                        {"episodes": 10, "random_action_prob": 0.8, "position_std": 0.03},
                        {"episodes": 8, "random_action_prob": 0.4},
                        {"episodes": 4, "random_action_prob": 0.1},
                    ]
                }
            },
        }
    ).task("lift-cube")
    train, val = split_episodes(replay_like.episodes, 0.15)  # round(3.3) = 3 of 22 held out
    assert val == (3, 11, 18)
    assert {replay_like.component_of(i) for i in val} == {0, 1, 2}
    assert sorted(train + val) == list(range(22)) and not set(train) & set(val)
    # Any component of at least episodes / held-out episodes (here 22 / 3) has one; smaller ones may not.
    for n, fraction in [(20, 0.1), (25, 0.1), (150, 0.1), (7, 0.5), (3, 0.34)]:
        train, val = split_episodes(n, fraction)
        stretch = -(-n // len(val))  # ceil(n / V)
        assert all(any(a <= i < a + stretch for i in val) for a in range(n - stretch + 1)), (n, fraction, val)
        assert len(val) == max(1, round(fraction * n)) and len(set(val)) == len(val)
    assert split_episodes(5, 0.1) == ((0, 1, 3, 4), (2,))  # at least one, from the middle
    assert split_episodes(4, 0.0) == ((0, 1, 2, 3), ())
