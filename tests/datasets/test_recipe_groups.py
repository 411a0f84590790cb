"""Task groups of a recipe: parsed, validated by name, recorded in the manifest, not in the fingerprint."""

from __future__ import annotations

import dataclasses
import json

import pytest

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import check_recipe_lock, write_manifest
from robocds.datasets.manifest import read_manifest
from robocds.datasets.recipe import load_recipe, recipe_from_dict

TASKS = {"lift-cube": {"episodes": 4}, "lift-cylinder": {"episodes": 3}, "place-cube-blue": {"episodes": 2}}


def grouped(groups) -> dict:
    return {"name": "grouped", "tasks": TASKS, "groups": groups}


def test_groups_are_read_as_tuples_and_round_trip_through_json():
    recipe = recipe_from_dict(grouped({"borrowers": ["lift-cube", "lift-cylinder"], "rich": ["place-cube-blue"]}))
    assert recipe.groups == {"borrowers": ("lift-cube", "lift-cylinder"), "rich": ("place-cube-blue",)}
    assert recipe_from_dict(json.loads(json.dumps(recipe.to_json_dict()))) == recipe


def test_groups_do_not_change_the_fingerprint_nor_the_form_of_a_recipe_without_them(tiny_recipe):
    with_groups = dataclasses.replace(tiny_recipe, groups={"lifts": ("lift-cube", "lift-cylinder")})
    assert with_groups.fingerprint() == tiny_recipe.fingerprint()
    assert "groups" not in tiny_recipe.to_json_dict() and with_groups.to_json_dict()["groups"] == {
        "lifts": ("lift-cube", "lift-cylinder")
    }


def test_groups_added_to_a_generated_dataset_are_recorded_in_its_manifest(dataset_copy, tiny_recipe):
    with_groups = dataclasses.replace(tiny_recipe, groups={"rich": ("place-cube-blue",)})
    check_recipe_lock(str(dataset_copy), with_groups)  # the same data: accepted, recipe.json rewritten
    write_manifest(str(dataset_copy), with_groups)
    recorded = read_manifest(str(dataset_copy)).recipe
    assert recorded["groups"] == {"rich": ["place-cube-blue"]}
    assert recipe_from_dict(recorded).groups == {"rich": ("place-cube-blue",)}
    assert json.loads((dataset_copy / "recipe.json").read_text())["groups"] == {"rich": ["place-cube-blue"]}


@pytest.mark.parametrize(
    ("groups", "words"),
    [
        ({"borrowers": ["lift-cube", "lift-block"]}, "groups.borrowers: task 'lift-block' is not in this recipe"),
        ({"borrowers": []}, "groups.borrowers=(): must be a non-empty list"),
        ({"borrowers": "lift-cube"}, "groups.borrowers='lift-cube': must be a non-empty list"),
        ({"borrowers": ["lift-cube", "lift-cube"]}, "groups.borrowers: a task is listed more than once"),
        ({"data rich": ["lift-cube"]}, "name 'data rich' must be letters, digits"),
        (["lift-cube"], "must be a mapping of group name"),
    ],
)
def test_bad_groups_are_named(groups, words):
    with pytest.raises(DatasetError) as info:
        recipe_from_dict(grouped(groups), "bad.yaml")
    assert str(info.value).startswith("bad.yaml: ") and words in str(info.value)


def test_the_cds_regime_recipe_groups_borrowers_and_controls():
    recipe = load_recipe("benchmark_cpu_replay")  # loading validates the groups
    assert recipe.groups == {
        "borrowers": ("lift-cube", "lift-cylinder"),
        "no_donor": ("lift-block",),
        "data_rich": ("place-cube-blue", "place-cylinder-purple"),
    }
