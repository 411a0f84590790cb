"""sha256 on every read path (streaming included) and on a resumed generation; a run that finished no
shard never blocks the corrected command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dataset_helpers import file_digests, first_shard, load, npy, rewrite_sample

from robocds.datasets.errors import DatasetError
from robocds.datasets.generate import generate
from robocds.datasets.manifest import read_manifest, record_relpath, verify_dataset
from robocds.datasets.replay import load_replay
from robocds.datasets.schema import KEY_PROPRIO, RECIPE_FILE
from robocds.datasets.streaming import StreamingMultiTaskDataset
from robocds.errors import one_line


def nudge_a_value(shard: Path) -> None:
    """Change one proprio value of the first episode: still finite, same size; only the sha256 tells."""

    def change(sample: dict) -> None:
        proprio = load(sample[KEY_PROPRIO])
        proprio[0, 0] += 0.25
        sample[KEY_PROPRIO] = npy(proprio)

    size = shard.stat().st_size
    rewrite_sample(shard, change)
    assert shard.stat().st_size == size


def stream(root: Path, workers: int = 0) -> None:
    dataset = StreamingMultiTaskDataset(str(root), batch_size=2, steps=1, tasks=["lift-cube"], shuffle_buffer=10_000)
    next(iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)))


@pytest.mark.parametrize("reader", ["verify", "memory", "streaming", "streaming in a worker"])
def test_changed_bytes_are_refused_by_every_reader_naming_the_shard(dataset_copy, reader):
    shard = first_shard(dataset_copy)
    nudge_a_value(shard)
    with pytest.raises(DatasetError) as info:
        if reader == "verify":
            verify_dataset(str(dataset_copy))
        elif reader == "memory":
            load_replay(str(dataset_copy))
        else:
            stream(dataset_copy, workers=1 if "worker" in reader else 0)
    # A DataLoader worker's error comes back re-raised by torch, its message holding the worker's traceback.
    message = one_line(info.value)
    assert message.startswith(f"{shard}: field 'manifest:sha256': manifest says "), message


def test_streaming_without_verify_checks_the_size_only(dataset_copy):
    nudge_a_value(first_shard(dataset_copy))
    dataset = StreamingMultiTaskDataset(
        str(dataset_copy), 2, 1, tasks=["lift-cube"], shuffle_buffer=10_000, verify=False
    )
    assert next(iter(dataset))["image"].shape[:2] == (1, 2)


def test_a_resumed_generation_reverifies_the_shards_it_keeps(tiny_recipe, tmp_path):
    root = tmp_path / "data"
    generate(tiny_recipe, str(root), workers=0, shard_range=range(0, 2), progress=False)
    kept = first_shard(root)
    nudge_a_value(kept)
    with pytest.raises(DatasetError, match="changed since it was written") as info:
        generate(tiny_recipe, str(root), workers=0, progress=False)
    assert info.value.source == str(kept)
    assert len(list(root.glob("*/shard-*.tar"))) == 2 and not (root / "manifest.json").exists()  # nothing new


def test_a_lost_manifest_is_not_rebuilt_over_a_changed_shard(tiny_root, tiny_recipe, dataset_copy):
    (dataset_copy / "manifest.json").unlink()
    nudge_a_value(first_shard(dataset_copy))
    with pytest.raises(DatasetError, match="changed since it was written"):
        generate(tiny_recipe, str(dataset_copy), workers=0, progress=False)
    assert not (dataset_copy / "manifest.json").exists()
    # The documented way out: delete the shard and its record, rerun; the bytes come back identical.
    first_shard(dataset_copy).unlink()
    (dataset_copy / record_relpath("lift-cube/shard-000000.tar")).unlink()
    generate(tiny_recipe, str(dataset_copy), workers=0, progress=False)
    assert file_digests(dataset_copy) == file_digests(tiny_root)


def test_a_shard_without_its_record_is_written_again(tiny_root, tiny_recipe, tmp_path):
    root = tmp_path / "data"
    generate(tiny_recipe, str(root), workers=0, shard_range=range(0, 2), progress=False)
    cut = root / "lift-cube" / "shard-000001.tar"  # as if killed between the shard's rename and its record's
    (root / record_relpath("lift-cube/shard-000001.tar")).unlink()
    cut.write_bytes(cut.read_bytes()[:1000])
    result = generate(tiny_recipe, str(root), workers=0, progress=False)
    assert "lift-cube/shard-000001.tar" in result.written and result.skipped == ["lift-cube/shard-000000.tar"]
    assert file_digests(root) == file_digests(tiny_root)


def test_a_run_that_finished_no_shard_never_blocks_the_corrected_command(tiny_root, tiny_recipe, tmp_path):
    root = tmp_path / "data"
    (root / "lift-cube").mkdir(parents=True)  # what a run that failed before its first shard leaves
    (root / RECIPE_FILE).write_text(json.dumps(tiny_recipe.with_overrides(base_seed=7).to_json_dict()))
    generate(tiny_recipe, str(root), workers=0, progress=False)
    assert read_manifest(str(root)).recipe == tiny_recipe.to_json_dict()
    assert file_digests(root) == file_digests(tiny_root)
