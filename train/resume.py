"""Exact resume of ``robocds fit`` from a checkpoint: loop bookkeeping and logs that continue in place.

What makes a resumed run continue exactly where the checkpoint was saved lives where its state lives:
the training loader's position (``robocds.datasets.datamodule``), the augmentation stream
(``MultiTaskCQL``), the routing state (``DataSharing``), the best score (``ModelCheckpoint``). This
module holds the rest:

- ``ExactResume``, a callback: Lightning (2.3 to at least 2.6) resumes a ``max_steps`` run from a
  checkpoint saved at the end of an epoch (where ``last.ckpt`` and ``best.ckpt`` are saved) as if the
  epoch had not ended: it runs that epoch's end again, counts one epoch too many and logs every later
  metric one step late. The callback marks such a checkpoint's epoch as finished when it is loaded, and
  flushes the loggers before every checkpoint, so the rows logged before it are on disk;
- ``ContinuedCSVLogger``: a ``CSVLogger`` that continues a run's ``metrics.csv`` (keeping the rows
  logged before the checkpoint's step) instead of deleting it;
- ``checkpoint_step``: the optimizer step a checkpoint was saved at.
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from robocds.checkpoint import load_checkpoint
from robocds.errors import CheckpointError

# Lightning's fit-loop state entries (``checkpoint["loops"]["fit_loop"]``) rewritten for an epoch-end checkpoint.
_EPOCH_PROGRESS = "epoch_progress"
_BATCH_PROGRESS = "epoch_loop.batch_progress"
_PER_EPOCH_PROGRESS = (  # counters Lightning resets when an epoch starts (their "current" part)
    _BATCH_PROGRESS,
    "epoch_loop.scheduler_progress",
    "epoch_loop.automatic_optimization.optim_progress",
    "epoch_loop.manual_optimization.optim_step_progress",
)
_VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"
_LOOP_STATE = "epoch_loop.state_dict"
_LOGGED_STEPS = "_batches_that_stepped"  # Lightning's logging step


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step (``global_step``) a Lightning checkpoint was saved at (a ``CheckpointError`` if none)."""
    step = load_checkpoint(path).get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: not a training checkpoint (global_step={step!r}, expected an int >= 0)")
    return step


class ExactResume(Callback):
    """Resumes from end-of-epoch checkpoints exactly (no repeated epoch end, no shifted logging steps).

    A checkpoint saved in ``on_train_epoch_end`` (``ModelCheckpoint``'s default when validation runs once
    an epoch) holds a fit loop whose epoch is "processed" but not "completed". Resumed under ``max_steps``,
    Lightning treats that as an interrupted epoch: it runs ``on_train_epoch_end`` again (re-saving
    checkpoints), increments the epoch counter twice, and adds one to its logging step, so every later
    metric is logged one step late. On load, this callback rewrites such a state into the one Lightning
    has once the epoch is completed (every per-epoch counter at zero, the totals kept), then keeps the
    logging step at the saved value until the first batch: Lightning's restart may take one empty
    iteration before it, which counts a logging step for no batch.

    It also restores what ``ModelCheckpoint`` leaves out of its own restore: ``current_score`` (the score
    of its latest save), so the checkpoints a resumed run writes hold the same state as an uninterrupted
    run's. Before every checkpoint is written it flushes the loggers, so what was logged before a
    checkpoint is on disk whenever the checkpoint is.
    """

    def __init__(self) -> None:
        super().__init__()
        self._logged_steps: int | None = None  # the restored logging step, until the first batch
        self._scores: dict[str, tuple[Any, Any]] = {}  # ModelCheckpoint state key -> (dirpath, current_score)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._scores = {
            key: (state.get("dirpath"), state["current_score"])
            for key, state in checkpoint.get("callbacks", {}).items()
            if isinstance(state, dict) and "current_score" in state
        }
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if fit_loop is None or not _ended_an_epoch(fit_loop):
            return
        try:
            _complete_epoch(fit_loop)
            self._logged_steps = int(fit_loop[_LOOP_STATE][_LOGGED_STEPS])
        except (KeyError, TypeError):
            warnings.warn(
                "ExactResume: this Lightning version's loop state is not the one expected; the checkpoint is "
                "resumed as Lightning does it (the epoch end may run again and logging steps may shift by one)",
                stacklevel=2,
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            dirpath, score = self._scores.get(callback.state_key, (None, None))
            # As ModelCheckpoint restores its best score: only when it still saves to the same folder.
            if isinstance(callback, ModelCheckpoint) and callback.current_score is None and dirpath == callback.dirpath:
                callback.current_score = score
        self._scores = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._logged_steps is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._logged_steps
            self._logged_steps = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()


def _ended_an_epoch(fit_loop: dict[str, Any]) -> bool:
    """Saved in ``on_train_epoch_end`` after the epoch's last batch (not at ``max_steps`` in mid-epoch)."""
    try:
        epoch = fit_loop[_EPOCH_PROGRESS]["current"]
        return epoch["processed"] == epoch["completed"] + 1 and bool(fit_loop[_BATCH_PROGRESS]["is_last_batch"])
    except (KeyError, TypeError):
        return False


def _complete_epoch(fit_loop: dict[str, Any]) -> None:
    """Rewrite an epoch-end fit-loop state (in place) into the state after the epoch completed."""
    for part in ("total", "current"):
        progress = fit_loop[_EPOCH_PROGRESS][part]
        progress["completed"] = progress["processed"]
    for key in _PER_EPOCH_PROGRESS:
        if key in fit_loop:
            _zero_current(fit_loop[key])
    fit_loop[_BATCH_PROGRESS]["is_last_batch"] = False
    validation = fit_loop[_VAL_PROGRESS]
    _zero(validation)  # Lightning counts validation batches per training epoch
    validation["is_last_batch"] = False


def _zero_current(progress: dict[str, Any]) -> None:
    """Zero every ``current`` counter of a (nested) progress state."""
    for key, value in progress.items():
        if isinstance(value, dict):
            _zero(value) if key == "current" else _zero_current(value)


def _zero(progress: dict[str, Any]) -> None:
    for key, value in progress.items():
        if isinstance(value, dict):
            _zero(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            progress[key] = 0


class ContinuedCSVLogger(CSVLogger):
    """A ``CSVLogger`` continuing an existing ``metrics.csv`` from ``resume_step`` (Lightning's deletes it).

    Rows logged at steps >= ``resume_step`` (by the interrupted process after its last checkpoint) are
    dropped: the resumed run logs them again.
    """

    def __init__(self, *args: Any, resume_step: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self.resume_step)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Keep the rows logged before ``resume_step`` (called by the base class instead of deleting the file)."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if _step(row, path) < self.resume_step]
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(f.name, path)
        self.metrics_keys = header  # appended rows keep this header (Lightning rewrites it if keys are added)


def _step(row: dict[str, str], path: Path) -> int:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        step = row.get("step")
        raise ValueError(f"{path}: a row has no integer 'step' ({step!r}); cannot continue this log") from None
