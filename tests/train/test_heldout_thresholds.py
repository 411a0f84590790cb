"""CDS with held-out thresholds (``threshold_from="heldout"``): what the DataSharing callback estimates, when,
from which batches, that a resumed run keeps its estimate, and the settings it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from test_resume import StateProbe, make_model, trainer
from tiny_data import TinyDataModule

from robocds.callbacks import DataSharing
from robocds.cql import data_action_values
from robocds.datasets.datamodule import OfflineDataModule
from robocds.datasets.schema import BATCH_ACTION
from robocds.errors import ConfigError
from robocds.sharing import own_task_values

torch.set_num_threads(1)


def expected_thresholds(pl_module: Any, loader: Any) -> torch.Tensor:
    """Mean of Q_i (min over heads, data actions, eval mode) over task i's rows of every validation batch."""
    was_training = pl_module.training
    pl_module.eval()
    values = [own_task_values(data_action_values(pl_module.batch_q_values(b), b[BATCH_ACTION])) for b in loader]
    pl_module.train(was_training)
    return torch.cat(values, dim=1).mean(dim=1)


class Recorder(Callback):
    """After DataSharing: the estimate at train start against an independent computation, the thresholds
    every batch was routed with, and the module's mode after each estimate."""

    def __init__(self, sharing: DataSharing, data: TinyDataModule) -> None:
        self.sharing, self.data = sharing, data
        self.at_start: tuple[torch.Tensor, torch.Tensor] | None = None
        self.routed: list[torch.Tensor] = []
        self.after_validation: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        assert pl_module.training  # the estimate put the network back in training mode
        estimate = self.sharing.router.heldout_threshold.clone()
        self.at_start = (estimate, expected_thresholds(pl_module, self.data.val_dataloader()))

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, *args: Any) -> None:
        self.routed.append(self.sharing.router.last_thresholds.clone())

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:  # the estimate just made, from the weights of this step
            self.after_validation = (
                self.sharing.router.heldout_threshold.clone(),
                expected_thresholds(pl_module, self.data.val_dataloader()),
            )


def counting(sharing: DataSharing) -> list[int]:
    """Records the optimizer step of every held-out estimate."""
    steps: list[int] = []
    estimate = sharing.estimate_heldout_thresholds

    def wrapped(trainer: Trainer, pl_module: Any) -> torch.Tensor:
        steps.append(trainer.global_step)
        return estimate(trainer, pl_module)

    sharing.estimate_heldout_thresholds = wrapped  # type: ignore[method-assign]
    return steps


def test_thresholds_are_q_on_the_validation_batches_and_route_until_the_next_estimate(tmp_path: Path) -> None:
    data = TinyDataModule(steps_per_epoch=3, val_batches=2)
    sharing = DataSharing(mode="cds", threshold_from="heldout", log_every_n_steps=0, image_every_n_steps=0)
    estimates = counting(sharing)
    recorder = Recorder(sharing, data)
    model = make_model(data)
    trainer(tmp_path, 5, sharing, recorder).fit(model, datamodule=data)
    # At the start of training and after the validation of step 3: not after the sanity check, nor at step 5.
    assert estimates == [0, 3]
    estimate, expected = recorder.at_start
    torch.testing.assert_close(estimate, expected)
    # Steps 1-3 route with the first estimate, steps 4-5 with the one made after the validation at step 3.
    for thresholds in recorder.routed[:3]:
        assert torch.equal(thresholds, recorder.routed[0])
    assert torch.equal(recorder.routed[3], recorder.routed[4]) and not torch.equal(
        recorder.routed[3], recorder.routed[0]
    )


def test_every_n_steps_adds_estimates_between_validations(tmp_path: Path) -> None:
    data = TinyDataModule(steps_per_epoch=3, val_batches=1)
    sharing = DataSharing(
        mode="cds", threshold_from="heldout", heldout_every_n_steps=2, log_every_n_steps=0, image_every_n_steps=0
    )
    estimates = counting(sharing)
    model = make_model(data)
    trainer(tmp_path, 5, sharing).fit(model, datamodule=data)
    assert estimates == [0, 2, 3, 4]  # train start, step 2, validation at step 3, step 4
    # The last estimate (step 4) is not the final weights' (step 5): it is what routed step 5.
    assert not torch.allclose(sharing.router.heldout_threshold, expected_thresholds(model, data.val_dataloader()))


def test_a_resumed_run_keeps_the_checkpoints_estimate(tmp_path: Path) -> None:
    data = TinyDataModule(steps_per_epoch=3, val_batches=1)
    first = DataSharing(mode="cds", threshold_from="heldout", log_every_n_steps=0, image_every_n_steps=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, 3, first, checkpoint).fit(make_model(data), datamodule=data)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]["DataSharing"]
    torch.testing.assert_close(saved["heldout_threshold"], first.router.heldout_threshold)  # after step 3's validation

    second = DataSharing(mode="cds", threshold_from="heldout", log_every_n_steps=0, image_every_n_steps=0)
    estimates = counting(second)
    probe = StateProbe(second)
    resumed = trainer(tmp_path, 5, second, probe)
    resumed.fit(make_model(data), datamodule=data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert estimates == []  # no new estimate at train start: the checkpoint's is the one an uninterrupted run holds
    torch.testing.assert_close(probe.at_start["heldout_threshold"], saved["heldout_threshold"])


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"val_fraction": 0.0}, r"val_batches=20, val_fraction=0.0"),
        ({"val_batches": 0}, r"val_batches=0, val_fraction=0.1"),
    ],
)
def test_refused_without_held_out_validation_batches(tiny_root: Path, tmp_path: Path, settings: dict, words: str):
    data = OfflineDataModule(str(tiny_root), batch_size=4, steps_per_epoch=2, **settings)
    sharing = DataSharing(mode="cds", threshold_from="heldout")
    with pytest.raises(
        ConfigError, match=rf"threshold_from='heldout' needs validation batches from held-out .*{words}"
    ):
        trainer(tmp_path, 2, sharing).fit(make_model(data), datamodule=data)
