"""Integrity beyond a shard's bytes: an episode must be the one this dataset's recipe generates at its index
(seeds derived from the base seed, the recipe's noise), and a shard's counts must be the manifest's, whichever
reader reads it."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from dataset_helpers import edit_manifest, first_shard, rewrite_sample

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import generate
from robocds.datasets.manifest import verify_dataset
from robocds.datasets.replay import load_replay
from robocds.datasets.streaming import StreamingMultiTaskDataset
from robocds.errors import one_line

READERS = ["verify", "memory", "streaming", "streaming in a worker"]


def read(root: Path, reader: str) -> None:
    if reader == "verify":
        verify_dataset(str(root))
    elif reader == "memory":
        load_replay(str(root))
    else:
        dataset = StreamingMultiTaskDataset(str(root), 2, 1, tasks=["lift-cube"], shuffle_buffer=10_000)
        workers = 1 if "worker" in reader else 0
        next(iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)))


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory, tiny_recipe) -> Path:
    """The tiny recipe from another base seed: same tasks, sizes and noise, other episodes."""
    root = tmp_path_factory.mktemp("other") / "data"
    generate(replace(tiny_recipe, base_seed=1), str(root), workers=0, progress=False)
    return root


def copy_shard_and_fix_manifest(source: Path, dataset: Path) -> Path:
    """What a hand-merge of two datasets does: a shard copied over, its manifest entry edited to match its bytes."""
    shard = first_shard(dataset)
    foreign = dict(next(s for t in _tasks(source) for s in t["shards"] if s["path"] == "lift-cube/shard-000000.tar"))
    shutil.copyfile(first_shard(source), shard)
    data = shard.read_bytes()
    foreign.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    def change(manifest: dict) -> None:
        task = next(t for t in manifest["tasks"] if t["name"] == "lift-cube")
        task["transitions"] += foreign["transitions"] - task["shards"][0]["transitions"]  # the totals made to agree
        task["shards"][0] = foreign

    edit_manifest(dataset, change)
    return shard


def _tasks(root: Path) -> list[dict]:
    return json.loads((root / "manifest.json").read_text())["tasks"]


@pytest.mark.parametrize("reader", READERS)
def test_a_shard_copied_from_another_dataset_is_refused_by_every_reader(other_dataset, dataset_copy, reader):
    shard = copy_shard_and_fix_manifest(other_dataset, dataset_copy)
    with pytest.raises(DatasetError) as info:
        read(dataset_copy, reader)
    message = one_line(info.value)
    assert message.startswith(f"{shard}: sample 'lift-cube-000000': field 'meta.json:seed': "), message
    assert "base_seed 0" in message and "comes from another dataset" in message


@pytest.mark.parametrize("reader", ["streaming", "memory"])
def test_a_transition_count_the_shard_does_not_hold_is_refused(dataset_copy, reader):
    def change(manifest: dict) -> None:  # the manifest consistent in itself, the shard not
        manifest["tasks"][0]["shards"][0]["transitions"] += 1
        manifest["tasks"][0]["transitions"] += 1

    edit_manifest(dataset_copy, change)
    with pytest.raises(DatasetError) as info:
        read(dataset_copy, reader)
    assert "field 'manifest:transitions': manifest says" in one_line(info.value)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("field", "value"), [("episode", -3), ("task", "lift-block"), ("position_std", -1.0)])
def test_meta_values_outside_the_recipe_are_one_named_error(dataset_copy, reader, field, value):
    def change(sample: dict) -> None:
        meta = json.loads(sample["meta.json"])
        meta[field] = value
        sample["meta.json"] = json.dumps(meta).encode()

    shard = first_shard(dataset_copy)
    rewrite_sample(shard, change)
    data = shard.read_bytes()

    def match_bytes(manifest: dict) -> None:  # as a hand edit would: only the sample's meta differs
        manifest["tasks"][0]["shards"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    edit_manifest(dataset_copy, match_bytes)
    with pytest.raises(DatasetError) as info:
        read(dataset_copy, reader)
    assert "field 'meta.json:" in one_line(info.value), one_line(info.value)
