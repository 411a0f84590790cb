"""Every kind of bad input fails with a DatasetError naming the shard, the sample key and the field.

Sample-level damage is checked through each reader: the verifier (``robocds-inspect``), the
in-memory loader and the streaming pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import edit_manifest, first_shard, load, npy, object_npy, rewrite_sample

from robocds.datasets.datamodule import OfflineDataModule
from robocds.datasets.errors import DatasetError
from robocds.datasets.inspection import main as inspect_main
from robocds.datasets.manifest import read_manifest, verify_dataset
from robocds.datasets.replay import load_replay
from robocds.datasets.schema import (
    KEY_ACTIONS,
    KEY_FRAMES,
    KEY_META,
    KEY_PROPRIO,
    KEY_TASK_REWARDS,
    SCHEMA_VERSION,
)
from robocds.datasets.streaming import StreamingMultiTaskDataset
from robocds.errors import run_cli

KEY = "lift-cube-000001"  # the damaged sample: the second episode of lift-cube's first shard


def read_with(reader: str, root: Path) -> None:
    if reader == "verify":
        verify_dataset(str(root))
    elif reader == "memory":
        load_replay(str(root))
    else:
        # One task, fixed shard list, a buffer larger than the task: every sample is read before a batch.
        stream = StreamingMultiTaskDataset(
            str(root), batch_size=2, steps=1, tasks=["lift-cube"], resampled=False, shuffle_buffer=10_000
        )
        next(iter(stream))


def set_member(name: str, value: bytes):
    def change(sample: dict) -> None:
        sample[name] = value

    return change


def drop_member(name: str):
    return lambda sample: sample.pop(name)


def edit_array(name: str, edit):
    def change(sample: dict) -> None:
        sample[name] = npy(edit(load(sample[name])))

    return change


def edit_meta(**fields):
    def change(sample: dict) -> None:
        sample[KEY_META] = json.dumps({**json.loads(sample[KEY_META]), **fields}).encode()

    return change


def nan_reward(rewards: np.ndarray) -> np.ndarray:
    rewards = rewards.copy()
    rewards[1, 0] = np.nan
    return rewards


SAMPLE_DAMAGE = {
    # case: (change to the raw sample, expected field, words in the message)
    "missing key": (drop_member(KEY_ACTIONS), KEY_ACTIONS, "missing"),
    "extra key": (set_member("notes.txt", b"hello"), "notes.txt", "unexpected key"),
    "pickle key .pyd": (set_member("policy.pyd", b"\x00"), "policy.pyd", "unpickling"),
    "pickle key .pickle": (set_member("state.pickle", b"\x00"), "state.pickle", "unpickling"),
    "object array needing pickle": (set_member(KEY_ACTIONS, object_npy(3)), KEY_ACTIONS, "not a plain .npy"),
    "wrong dtype": (edit_array(KEY_ACTIONS, lambda a: a.astype(np.int32)), KEY_ACTIONS, "dtype int32"),
    "wrong shape": (edit_array(KEY_PROPRIO, lambda a: a[:-1]), KEY_PROPRIO, "shape"),
    "NaN reward": (edit_array(KEY_TASK_REWARDS, nan_reward), KEY_TASK_REWARDS, "non-finite reward at step 1"),
    "unknown task name": (edit_meta(task="lift-sphere"), f"{KEY_META}:task", "unknown task 'lift-sphere'"),
    "wrong image size": (edit_meta(image_size=64), f"{KEY_META}:image_size", "image size is 32"),
    "bad meta type": (edit_meta(length="7"), f"{KEY_META}:length", "expected int"),
    "meta not JSON": (set_member(KEY_META, b"{not json"), KEY_META, "not valid JSON"),
    "corrupt PNG": (set_member(KEY_FRAMES, b"\x89PNG garbage"), KEY_FRAMES, "not a readable PNG"),
    "corrupt npy": (set_member(KEY_PROPRIO, b"\x93NUMPY\x01\x00garbage"), KEY_PROPRIO, ".npy"),
}


@pytest.mark.parametrize("reader", ["verify", "memory", "streaming"])
@pytest.mark.parametrize("case", list(SAMPLE_DAMAGE))
def test_damaged_sample(dataset_copy, case, reader):
    change, field, words = SAMPLE_DAMAGE[case]
    shard = first_shard(dataset_copy)
    assert rewrite_sample(shard, change, index=1) == KEY
    with pytest.raises(DatasetError) as info:
        read_with(reader, dataset_copy)
    err = info.value
    assert err.source == str(shard), str(err)
    assert (err.key, err.field) == (KEY, field), str(err)
    assert words in str(err)
    assert str(shard) in str(err) and KEY in str(err) and field in str(err)


def truncate(shard: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])  # cut inside a member


def truncate_at_member(shard: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[: 512 * 6])  # whole members only, no end-of-archive marker


def corrupt_header(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    second = 512 + ((len(_first_member(data)) + 511) // 512) * 512  # offset of the second member's header
    data[second : second + 100] = b"\xff" * 100
    shard.write_bytes(bytes(data))


def _first_member(data: bytes) -> bytes:
    size = int(data[124:136].rstrip(b"\x00 ").decode(), 8)
    return data[512 : 512 + size]


TAR_DAMAGE = {"truncated": truncate, "truncated at a member": truncate_at_member, "corrupt header": corrupt_header}


@pytest.mark.parametrize("reader", ["verify", "memory", "streaming"])
@pytest.mark.parametrize("case", list(TAR_DAMAGE))
def test_damaged_tar(dataset_copy, case, reader):
    shard = first_shard(dataset_copy)
    TAR_DAMAGE[case](shard)
    with pytest.raises(DatasetError) as info:
        read_with(reader, dataset_copy)
    assert info.value.source == str(shard), str(info.value)
    assert info.value.field is not None, str(info.value)  # "tar", or the member a cut sample lacks
    if reader != "streaming":
        assert info.value.field == "tar"


MANIFEST_DAMAGE = {
    # case: (change to manifest.json, the error's source (relative), field, words)
    "sha256": (
        lambda m: m["tasks"][0]["shards"][0].update(sha256="0" * 64),
        "lift-cube/shard-000000.tar",
        "manifest:sha256",
        "manifest says",
    ),
    "sample count": (  # the manifest consistent in itself (task total too), the shard not
        lambda m: (m["tasks"][0]["shards"][-1].update(samples=3), m["tasks"][0].update(episodes=5)),
        "lift-cube/shard-000001.tar",
        "manifest:samples",
        "manifest says 3",
    ),
    "task totals": (
        lambda m: m["tasks"][0].update(episodes=5),
        "manifest.json",
        "tasks[0].episodes",
        "its shards list 4",
    ),
    "schema version": (
        lambda m: m.update(schema_version=99),
        "manifest.json",
        "schema_version",
        f"supports {SCHEMA_VERSION}",
    ),
    "unknown task": (
        lambda m: m["tasks"][0].update(name="lift-sphere"),
        "manifest.json",
        "tasks[0].name",
        "unknown task",
    ),
    "missing field": (lambda m: m.pop("proprio_dim"), "manifest.json", "proprio_dim", "missing"),
    "wrong field type": (lambda m: m.update(proprio_dim="8"), "manifest.json", "proprio_dim", "expected int"),
    "missing env setting": (lambda m: m["env"].pop("substeps"), "manifest.json", "env", "substeps: missing"),
    "bad env setting": (lambda m: m["env"].update(image_size=8), "manifest.json", "env", "image_size=8: must be"),
    "unknown camera": (lambda m: m["env"].update(camera="drone"), "manifest.json", "env", "camera='drone'"),
    "action set": (lambda m: m["env"].update(actions=["a", "b"]), "manifest.json", "env", "this code's action set"),
    # Values the types allow but the dataset cannot hold: paths leaving the root, names twice, impossible numbers.
    "path leaving the root": (
        lambda m: m["tasks"][0]["shards"][0].update(path="../../other/lift-cube/shard-000000.tar"),
        "manifest.json",
        "tasks[0].shards[0].path",
        "inside the dataset",
    ),
    "absolute path": (
        lambda m: m["tasks"][0]["shards"][0].update(path="/etc/lift-cube/shard-000000.tar"),
        "manifest.json",
        "tasks[0].shards[0].path",
        "expected 'lift-cube/shard-NNNNNN.tar'",
    ),
    "task listed twice": (lambda m: m["tasks"].append(m["tasks"][0]), "manifest.json", "tasks", "more than once"),
    "reward column twice": (
        lambda m: m["reward_tasks"].append(m["reward_tasks"][0]),
        "manifest.json",
        "reward_tasks",
        "more than once",
    ),
    "shard listed twice": (
        lambda m: m["tasks"][0]["shards"].append(m["tasks"][0]["shards"][0]),
        "manifest.json",
        "tasks[0].shards[2].first_episode",
        "the shards before it end at episode 4",
    ),
    "success rate above 1": (
        lambda m: m["tasks"][0].update(success_rate=2.0),
        "manifest.json",
        "tasks[0].success_rate",
        "must be in [0, 1]",
    ),
    "task without a reward column": (
        lambda m: m.update(reward_tasks=[t for t in m["reward_tasks"] if t != m["tasks"][0]["name"]]),
        "manifest.json",
        "tasks[0].name",
        "has no reward column",
    ),
    "recipe of other tasks": (
        lambda m: m["recipe"]["tasks"].pop(m["tasks"][0]["name"]),
        "manifest.json",
        "recipe.tasks",
        "the manifest's tasks are",
    ),
}


@pytest.mark.parametrize("case", list(MANIFEST_DAMAGE))
def test_manifest_that_does_not_match(dataset_copy, case):
    change, source, field, words = MANIFEST_DAMAGE[case]
    edit_manifest(dataset_copy, change)
    with pytest.raises(DatasetError) as info:
        verify_dataset(str(dataset_copy))
    assert info.value.source == str(dataset_copy / source), str(info.value)
    assert info.value.field == field and words in str(info.value), str(info.value)


def test_missing_and_extra_shards(dataset_copy):
    extra = dataset_copy / "lift-cube" / "shard-000007.tar"
    shutil.copy(first_shard(dataset_copy), extra)
    with pytest.raises(DatasetError, match="not listed in the manifest") as info:
        verify_dataset(str(dataset_copy))
    assert info.value.source == str(extra)
    extra.unlink()
    first_shard(dataset_copy, "lift-cylinder").unlink()
    with pytest.raises(DatasetError, match="missing shard") as info:
        load_replay(str(dataset_copy))
    assert info.value.source == str(first_shard(dataset_copy, "lift-cylinder"))


def test_missing_or_unreadable_manifest(dataset_copy, tmp_path):
    with pytest.raises(DatasetError, match="missing"):
        read_manifest(str(tmp_path / "nowhere"))
    (dataset_copy / "manifest.json").write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_manifest(str(dataset_copy))


def test_unknown_task_selected(tiny_root):
    with pytest.raises(ValueError, match="'lift-sphere' is not in dataset 'tiny'"):
        OfflineDataModule(str(tiny_root), tasks=["lift-cube", "lift-sphere"])
    with pytest.raises(ValueError, match="listed twice"):
        OfflineDataModule(str(tiny_root), tasks=["lift-cube", "lift-cube"])


def test_inspect_reports_the_problem_and_fails(dataset_copy, capsys):
    shard = first_shard(dataset_copy)
    rewrite_sample(shard, edit_array(KEY_TASK_REWARDS, nan_reward), index=1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(inspect_main, "robocds-inspect", [str(dataset_copy), "--no-progress", "--no-media"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("robocds-inspect: error: ") and err.count("\n") == 1, err
    assert str(shard) in err and KEY in err and KEY_TASK_REWARDS in err


def test_analysing_a_checkpoint_on_another_dataset_names_the_mismatch(tiny_root):
    from types import SimpleNamespace

    from robocds.datasets.manifest import read_manifest
    from robocds.eval.analysis import held_out_batches

    manifest = read_manifest(str(tiny_root))
    model = SimpleNamespace(task_names=list(manifest.task_names), image_size=manifest.image_size + 16,
                            proprio_dim=manifest.proprio_dim, num_actions=len(manifest.actions))  # fmt: skip
    with pytest.raises(ValueError, match=rf"image_size={manifest.image_size} but the checkpoint's is "):
        held_out_batches(model, str(tiny_root), batches=1, batch_size=4)
    model.task_names = ["lift-moon"]
    with pytest.raises(ValueError, match="lift-moon"):
        held_out_batches(model, str(tiny_root), batches=1, batch_size=4)
