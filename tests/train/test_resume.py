"""Resuming from a checkpoint continues with the DataSharing callback's state; DDP fit on 2 CPU processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_data import TinyDataModule

from robocds.callbacks import DataSharing
from robocds.config import CQLConfig, EncoderConfig
from robocds.module import MultiTaskCQL

torch.set_num_threads(1)

TINY_ENCODER = EncoderConfig(channels=(8, 16), kernel_sizes=(4, 3), strides=(2, 2), feature_dim=32, proprio_features=8)


def make_model(data: TinyDataModule) -> MultiTaskCQL:
    return MultiTaskCQL(
        num_tasks=data.num_tasks,
        num_actions=data.num_actions,
        image_size=data.image_size,
        proprio_dim=data.proprio_dim,
        task_names=data.task_names,
        encoder=TINY_ENCODER,
        cql=CQLConfig(head_hidden=32),
    )


class StateProbe(Callback):
    """Records the DataSharing state when training (re)starts, i.e. after a checkpoint was restored."""

    def __init__(self, sharing: DataSharing) -> None:
        self.sharing = sharing
        self.at_start: dict[str, Any] | None = None

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.at_start = self.sharing.state_dict()


def trainer(tmp_path: Path, max_steps: int, *callbacks: Callback, **kwargs: Any) -> Trainer:
    return Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


def test_resume_continues_with_the_same_callback_state(tmp_path: Path) -> None:
    data = TinyDataModule(steps_per_epoch=3, val_batches=1)
    first = DataSharing(mode="cds", ema=0.9, log_every_n_steps=0, image_every_n_steps=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, 4, first, checkpoint).fit(make_model(data), datamodule=data)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]["DataSharing"]
    assert saved["num_updates"] == 4
    torch.testing.assert_close(saved["running_threshold"], first.router.running_threshold)

    second = DataSharing(mode="cds", ema=0.9, log_every_n_steps=0, image_every_n_steps=0)
    probe = StateProbe(second)
    resumed = trainer(tmp_path, 7, second, probe)
    resumed.fit(make_model(data), datamodule=data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert probe.at_start["num_updates"] == 4
    torch.testing.assert_close(probe.at_start["running_threshold"], saved["running_threshold"])
    assert resumed.global_step == 7 and second.router.num_updates == 7
    # The running estimate moved on from the restored one instead of restarting from a batch mean.
    assert not torch.equal(second.router.running_threshold.cpu(), saved["running_threshold"])


def test_mode_mismatch_on_resume_warns() -> None:
    sharing = DataSharing(mode="all")
    with pytest.warns(UserWarning, match="mode='cds'"):
        sharing.load_state_dict({"mode": "cds", "num_updates": 3, "running_threshold": None})
    assert sharing.router.num_updates == 3


class RankRouting(Callback):
    """Saves every rank's thresholds after each batch."""

    def __init__(self, sharing: DataSharing, out: Path) -> None:
        self.sharing, self.out, self.thresholds = sharing, out, []

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.thresholds.append(self.sharing.router.last_thresholds.cpu())

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        torch.save(torch.stack(self.thresholds), self.out / f"thresholds_rank{trainer.global_rank}.pt")


def test_ddp_fit_on_two_cpu_processes_routes_alike(tmp_path: Path) -> None:
    data = TinyDataModule(steps_per_epoch=3, val_batches=1)
    sharing = DataSharing(mode="cds", log_every_n_steps=1, image_every_n_steps=0)
    run = trainer(tmp_path, 3, sharing, RankRouting(sharing, tmp_path), strategy="ddp_spawn", devices=2)
    run.fit(make_model(data), datamodule=data)
    ranks = [torch.load(tmp_path / f"thresholds_rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].shape == (3, 3)
    torch.testing.assert_close(ranks[0], ranks[1])
