"""The training loaders resume mid-epoch with the very batches an uninterrupted run draws (memory and streaming)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robocds.datasets.datamodule import OfflineDataModule


def data_module(root: Path, loader: str, workers: int) -> OfflineDataModule:
    dm = OfflineDataModule(
        str(root), batch_size=3, loader=loader, num_workers=workers, seed=3, steps_per_epoch=5, shuffle_buffer=10
    )
    dm.setup("fit")
    return dm


def assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("loader,workers", [("memory", 0), ("streaming", 0), ("streaming", 2)])
@pytest.mark.parametrize("consumed", [2, 3])
def test_loader_resumes_mid_epoch(tiny_root: Path, loader: str, workers: int, consumed: int) -> None:
    reference = data_module(tiny_root, loader, workers).train_dataloader()
    epochs = [list(reference) for _ in range(3)]

    interrupted = data_module(tiny_root, loader, workers)
    train = interrupted.train_dataloader()
    list(train)
    batches = iter(train)
    assert_same_batches([next(batches) for _ in range(consumed)], epochs[1][:consumed])
    state = train.state_dict()
    assert state == {"epoch": 1, "batches": consumed}
    del batches

    # Lightning's resumable-loader interface: load_state_dict on the new loader before it is iterated.
    resumed = data_module(tiny_root, loader, workers).train_dataloader()
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed), epochs[1][consumed:])  # with 2 workers: the others' turn comes first
    assert_same_batches(list(resumed), epochs[2])  # and the next epoch starts from its first batch

    # The data module's own copy of the position (Lightning restores it for max_epochs runs too).
    fresh = data_module(tiny_root, loader, workers)
    fresh.load_state_dict(interrupted.state_dict())
    assert_same_batches(list(fresh.train_dataloader()), epochs[1][consumed:])


def test_a_finished_epoch_resumes_with_the_next_one(tiny_root: Path) -> None:
    reference = data_module(tiny_root, "memory", 0).train_dataloader()
    epochs = [list(reference) for _ in range(2)]
    resumed = data_module(tiny_root, "memory", 0).train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 5})
    assert_same_batches(list(resumed), epochs[1])


def test_old_checkpoints_resume_at_the_epoch_they_stored(tiny_root: Path) -> None:
    reference = data_module(tiny_root, "memory", 0).train_dataloader()
    epochs = [list(reference) for _ in range(2)]
    dm = data_module(tiny_root, "memory", 0)
    dm.load_state_dict({"train_epochs_started": 1})
    assert_same_batches(list(dm.train_dataloader()), epochs[1])


@pytest.mark.parametrize("state", [{"epoch": -1, "batches": 0}, {"epoch": 0}, {"epoch": 0, "batches": 1.5}])
def test_a_bad_loader_state_is_named(tiny_root: Path, state: dict) -> None:
    loader = data_module(tiny_root, "memory", 0).train_dataloader()
    with pytest.raises(ValueError, match="training loader state: (epoch|batches)="):
        loader.load_state_dict(state)
