"""Exact resume: a SIGKILLed ``robocds fit`` resumed from last.ckpt ends bit for bit like an uninterrupted run;
resuming continues with the DataSharing callback's state; DDP fit on 2 CPU processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from robocds.train.layout import RunLayout
from robocds.train.resume import checkpoint_step

torch.set_num_threads(1)
TESTS_DIR = Path(__file__).resolve().parent  # tiny_data and faults, importable by the subprocesses

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


def fit_command(root: Path, runs: Path, *extra: str) -> list[str]:
    """A short CDS fit on the real tiny dataset: 3-step epochs (validation and last.ckpt at steps 3 and 6)."""
    return [
        *(sys.executable, "-m", "robocds.train", "fit", "--config", "base", "--config", "cds", "--config", "smoke"),
        *(f"--data.root={root}", "--data.batch_size=4", "--data.steps_per_epoch=3", "--data.val_batches=1"),
        *("--trainer.max_steps=8", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"),
        *("--trainer.log_every_n_steps=1", "--sharing.log_every_n_steps=2", "--sharing.image_every_n_steps=0"),
        *("--sharing.ema=0.9", f"--runs_dir={runs}", "--run_name=cds", *extra),
    ]


class Fit:
    """A ``robocds fit`` subprocess, its output in ``<log>``."""

    def __init__(self, command: list[str], log: Path) -> None:
        # One thread: CPU kernels are bitwise repeatable for a fixed thread count (see docs/LEARNING.md).
        path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait(self) -> int:
        code = self.process.wait(timeout=600)
        if code not in (0, -signal.SIGKILL):
            pytest.fail(f"robocds fit exited with {code}:\n{self.log.read_text()[-3000:]}")
        return code


def relative(value: Any, run: str) -> Any:
    return value.replace(run, "<run>") if isinstance(value, str) else value


def assert_same(a: Any, b: Any, where: str, paths: tuple[str, str]) -> None:
    """Equal down to every tensor's bits; run folders in strings are compared relative to their run."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {type(b)}"
        a, b = ({relative(key, path): value for key, value in d.items()} for d, path in ((a, paths[0]), (b, paths[1])))
        assert a.keys() == b.keys(), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}", paths)
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]", paths)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, str):
        assert relative(a, paths[0]) == relative(b, paths[1]), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


# cds_heldout: held-out thresholds estimated at the start, every 2 steps and after each validation (step 3 and 6).
HELDOUT = ("--sharing.threshold_from=heldout", "--sharing.ema=0", "--sharing.heldout_every_n_steps=2")


# The held-out variant is opt-in (-m slow, about 100 s on 2 shared cores); the fast suite keeps the state test
# of tests/train/test_heldout_thresholds.py.
@pytest.mark.parametrize("sharing", [(), pytest.param(HELDOUT, marks=pytest.mark.slow)], ids=["cds-ema", "cds-heldout"])
def test_sigkilled_fit_resumes_bit_for_bit(tiny_root: Path, tmp_path: Path, sharing: tuple[str, ...]) -> None:
    """Killed (SIGKILL) two steps after the epoch-end last.ckpt of step 3, resumed from it with --ckpt_path:
    the final weights, optimizer, routing and loop state, best.ckpt and metrics.csv equal the uninterrupted run's."""
    full, killed = RunLayout(tmp_path / "full", "cds"), RunLayout(tmp_path / "killed", "cds")
    reference = Fit(fit_command(tiny_root, full.runs_dir, *sharing), tmp_path / "full.log")  # runs alongside
    kill = ["--trainer.callbacks+=faults.KillAtStep", "--trainer.callbacks.step=5"]
    assert (
        Fit(fit_command(tiny_root, killed.runs_dir, *sharing, *kill), tmp_path / "killed.log").wait() == -signal.SIGKILL
    )
    assert checkpoint_step(killed.last_checkpoint) == 3  # the kill came between two saves
    resume = f"--ckpt_path={killed.last_checkpoint}"
    assert Fit(fit_command(tiny_root, killed.runs_dir, *sharing, resume), tmp_path / "resumed.log").wait() == 0
    reference.wait()

    assert not (killed.folder.parent / "version_1").exists()  # resumed in place, in the run's own folder
    paths = (str(full.folder), str(killed.folder))
    for name in ("last_checkpoint", "best_checkpoint"):
        a, b = (torch.load(getattr(run, name), weights_only=True, map_location="cpu") for run in (full, killed))
        for key in ("state_dict", "optimizer_states", "callbacks", "loops", "augment", "global_step", "epoch"):
            assert_same(a[key], b[key], f"{name}:{key}", paths)
    assert checkpoint_step(killed.last_checkpoint) == 8
    assert full.metrics_csv.read_text() == killed.metrics_csv.read_text()  # same rows, same steps, same values
