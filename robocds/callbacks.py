"""Data sharing (none / all / cds / uds / share_successes) as a Lightning callback."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from robocds.config import SharingConfig, SharingMode, ThresholdRule
from robocds.heatmap import sharing_heatmap
from robocds.sharing import SharingRouter

# The scalars this callback logs (readers such as robocds-compare look them up with these, never by pattern).
SHARING_PREFIX = "sharing/"
SHARED_FRACTION_KEY = f"{SHARING_PREFIX}shared_fraction"
SHARING_IMAGE_TAG = f"{SHARING_PREFIX}matrix"


def sharing_key(target: str, source: str) -> str:
    """Scalar key of the mean weight of ``source``'s transitions routed into ``target``."""
    return f"{SHARING_PREFIX}{target}/{source}"


def threshold_key(task: str) -> str:
    """Scalar key of ``task``'s CDS threshold."""
    return f"{SHARING_PREFIX}threshold/{task}"


class DataSharing(Callback):
    """Owns the routing of cross-task transitions and hands the module its weights at every batch.

    In ``setup`` it attaches its ``SharingRouter`` to the module (``pl_module.router``); the module calls
    it once per training batch with the detached Q-values of the data actions [T, B, T] and the batch
    (``share_successes`` reads its ``episode_successes``) and gets the weights [T, B, T]. Thresholds are
    all-reduced over DDP ranks, so one GPU and many route alike.

    Logged every ``log_every_n_steps`` optimizer steps (straight to every logger, rank zero): the mean
    T x T sharing matrix since the last log as scalars ``sharing/<target>/<source>`` (mean weight of the
    source's transitions routed into the target; with hard weights the fraction shared),
    ``sharing/shared_fraction`` (mean off-diagonal entry) and, for cds, ``sharing/threshold/<task>``;
    every ``image_every_n_steps`` the matrix as a heatmap image ``sharing/matrix`` on TensorBoard. They are
    logged at Lightning's logging step of the batch (``global_step - 1`` after it, the step ``train/loss``
    of the same batch is logged at), so a resumed run's rows start where the checkpoint's step begins.

    State (running thresholds, number of routed batches, the matrix summed since the last log) is saved in
    checkpoints and restored on resume.

    Args:
        mode: "none", "all", "cds", "uds" or "share_successes" (see ``robocds.config.SharingConfig``).
        threshold: cds: "mean" or "percentile" of Q_i over task i's own transitions.
        percentile: cds with threshold="percentile": which percentile (0-100).
        temperature: cds: None for the hard 0/1 weight, > 0 for sigmoid((Q - threshold) / temperature).
        ema: cds: 0 for the per-batch threshold, in (0, 1) for a running estimate.
        log_every_n_steps: how often the matrix and thresholds are logged as scalars (0: never).
        image_every_n_steps: how often the heatmap is logged (0: never).
    """

    def __init__(
        self,
        mode: SharingMode = "cds",
        threshold: ThresholdRule = "mean",
        percentile: float = 50.0,
        temperature: float | None = None,
        ema: float = 0.0,
        log_every_n_steps: int = 50,
        image_every_n_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.config = SharingConfig(
            mode=mode, threshold=threshold, percentile=percentile, temperature=temperature, ema=ema
        )
        if log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps={log_every_n_steps}: must be >= 0")
        if image_every_n_steps < 0:
            raise ValueError(f"image_every_n_steps={image_every_n_steps}: must be >= 0")
        self.log_every_n_steps = log_every_n_steps
        self.image_every_n_steps = image_every_n_steps
        self.router = SharingRouter(self.config)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        pl_module.router = self.router

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        scalars_due = self.log_every_n_steps > 0 and step % self.log_every_n_steps == 0
        image_due = self.image_every_n_steps > 0 and step % self.image_every_n_steps == 0
        if not (scalars_due or image_due):
            return
        matrix = self.router.pop_matrix()  # collective under DDP: every rank reaches here at the same step
        if matrix is None or not trainer.is_global_zero:
            return
        # Lightning logs the metrics of batch n (global_step n after its optimizer step) at step n - 1.
        self._log(trainer, pl_module, matrix.float().cpu(), step - 1, image=image_due)

    def _log(self, trainer: Trainer, pl_module: LightningModule, matrix: torch.Tensor, step: int, image: bool) -> None:
        names = list(getattr(pl_module, "task_names", None) or [f"task_{i}" for i in range(matrix.shape[0])])
        t = matrix.shape[0]
        metrics = {sharing_key(names[i], names[j]): float(matrix[i, j]) for i in range(t) for j in range(t)}
        off_diagonal = matrix[~torch.eye(t, dtype=torch.bool)]
        metrics[SHARED_FRACTION_KEY] = float(off_diagonal.mean()) if off_diagonal.numel() else 0.0
        thresholds = self.router.last_thresholds
        if thresholds is not None:
            metrics.update({threshold_key(names[i]): float(v) for i, v in enumerate(thresholds.cpu())})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if image:
            picture = sharing_heatmap(matrix.numpy(), names, title=f"{self.config.mode}: mean weight, step {step + 1}")
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(SHARING_IMAGE_TAG, picture, global_step=step, dataformats="HWC")

    def state_dict(self) -> dict[str, Any]:
        return self.router.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("mode") != self.config.mode:
            warnings.warn(
                f"DataSharing: the checkpoint was trained with mode={state_dict.get('mode')!r}, this run uses "
                f"mode={self.config.mode!r}; its routing state is loaded all the same",
                stacklevel=2,
            )
        self.router.load_state_dict(state_dict)
