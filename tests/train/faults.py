"""Faults injected into real training runs (importable by a ``robocds fit`` subprocess via PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAtStep(Callback):
    """SIGKILLs its own process at the end of optimizer step ``step``: no hook, flush or handler runs after it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashAtStep(Callback):
    """Raises ``RuntimeError`` at the end of optimizer step ``step`` (an in-process stand-in for a crash)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash injected at step {self.step}")
