"""Data sharing (none / all / cds / uds / share_successes) as a Lightning callback."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from robocds.config import SharingConfig, SharingMode, ThresholdRule, ThresholdSource
from robocds.cql import data_action_values
from robocds.datasets.schema import BATCH_ACTION
from robocds.errors import ConfigError
from robocds.heatmap import sharing_heatmap
from robocds.sharing import SharingRouter, own_task_values

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

    With ``threshold_from="heldout"`` (cds), threshold_i is the rule (mean or percentile) over Q_i of the data
    actions on task i's *held-out* episodes: the data module's fixed validation batches, scored by the network
    being trained in eval mode, without augmentation or gradient (min over heads, as for routing). It is
    estimated at the start of training (unless a resumed checkpoint holds one), after every validation and,
    with ``heldout_every_n_steps`` > 0, every that many optimizer steps; batches are routed with the latest
    estimate. Cost per estimate: one forward pass over the validation batches (``val_batches`` x T x
    ``val_batch_size`` frames). It needs validation batches drawn from held-out episodes.

    State (running thresholds, the held-out estimate, number of routed batches, the matrix summed since the
    last log) is saved in checkpoints and restored on resume.

    Args:
        mode: "none", "all", "cds", "uds" or "share_successes" (see ``robocds.config.SharingConfig``).
        threshold: cds: "mean" or "percentile" of Q_i over task i's own transitions.
        percentile: cds with threshold="percentile": which percentile (0-100).
        temperature: cds: None for the hard 0/1 weight, > 0 for sigmoid((Q - threshold) / temperature).
        ema: cds: 0 for the per-batch threshold, in (0, 1) for a running estimate.
        threshold_from: cds: "batch" (task i's rows of the training batch) or "heldout" (its held-out episodes).
        heldout_every_n_steps: cds with threshold_from="heldout": also re-estimate every this many optimizer
            steps (0: only at the start of training and after every validation).
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
        threshold_from: ThresholdSource = "batch",
        heldout_every_n_steps: int = 0,
        log_every_n_steps: int = 50,
        image_every_n_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.config = SharingConfig(
            mode=mode,
            threshold=threshold,
            percentile=percentile,
            temperature=temperature,
            ema=ema,
            threshold_from=threshold_from,
        )
        if heldout_every_n_steps < 0:
            raise ValueError(f"heldout_every_n_steps={heldout_every_n_steps}: must be >= 0")
        self.heldout_every_n_steps = heldout_every_n_steps
        if log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps={log_every_n_steps}: must be >= 0")
        if image_every_n_steps < 0:
            raise ValueError(f"image_every_n_steps={image_every_n_steps}: must be >= 0")
        self.log_every_n_steps = log_every_n_steps
        self.image_every_n_steps = image_every_n_steps
        self.router = SharingRouter(self.config)

    @property
    def heldout(self) -> bool:
        """Whether thresholds come from held-out episodes (cds with ``threshold_from="heldout"``)."""
        return self.config.mode == "cds" and self.config.threshold_from == "heldout"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_objective_sharing(getattr(pl_module, "objective", "cql"), self.config.mode)
        pl_module.router = self.router
        datamodule = getattr(trainer, "datamodule", None)
        if self.heldout and stage == TrainerFn.FITTING and not getattr(datamodule, "holds_out_episodes", True):
            settings = getattr(datamodule, "settings", None)
            given = f" (val_batches={settings.val_batches}, val_fraction={settings.val_fraction})" if settings else ""
            raise ConfigError(
                f"sharing.threshold_from='heldout' needs validation batches from held-out episodes{given}: set "
                "data.val_batches >= 1 and data.val_fraction > 0"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.heldout and self.router.heldout_threshold is None:  # a resumed run keeps its checkpoint's estimate
            self.estimate_heldout_thresholds(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Before the checkpoint callbacks (Lightning runs them last), so a checkpoint holds the new estimate.
        if self.heldout and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.estimate_heldout_thresholds(trainer, pl_module)

    def estimate_heldout_thresholds(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        """Re-estimate the held-out thresholds [T] from the validation batches (see the class docstring)."""
        own_q = own_data_values(pl_module, _validation_batches(trainer))
        if own_q is None:
            raise ConfigError(
                "sharing.threshold_from='heldout' needs validation batches: the data module yields none "
                "(data.val_batches=0?); set data.val_batches >= 1"
            )
        return self.router.set_heldout_thresholds(own_q)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._log_due(trainer, pl_module)
        step = trainer.global_step
        # After this batch's log (its thresholds are the ones it was routed with); the next batch uses the new ones.
        if self.heldout and self.heldout_every_n_steps > 0 and step % self.heldout_every_n_steps == 0:
            self.estimate_heldout_thresholds(trainer, pl_module)

    def _log_due(self, trainer: Trainer, pl_module: LightningModule) -> None:
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


def check_objective_sharing(objective: str, mode: str) -> None:
    """Refuse a sharing mode that the module's objective would silently ignore: behaviour cloning (``bc``,
    ``filtered_bc``) trains every task on its own data and never calls the router, so it needs mode ``none``."""
    if objective != "cql" and mode != "none":
        raise ConfigError(
            f"model.objective={objective!r} trains each task on its own data only, so sharing.mode={mode!r} "
            f"would be ignored: set sharing.mode to 'none' (--config {objective} does)"
        )


def data_action_q_values(
    pl_module: LightningModule, batches: Iterable[Mapping[str, torch.Tensor]]
) -> torch.Tensor | None:
    """Q of every target task at the data actions over every batch, [T_src, N, T_tgt] (N = batches x B); None if
    no batch.

    Scored by ``pl_module`` (a ``MultiTaskCQL``) in eval mode, without augmentation or gradient, min over heads
    (``batch_q_values``); its training mode is restored after. The global RNG is left as it was (a DataLoader's
    iterator draws its base seed from it, which would shift every later draw of the run).
    """
    values = []
    was_training = pl_module.training
    pl_module.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for batch in batches:
            batch = {key: value.to(pl_module.device) for key, value in batch.items()}
            values.append(data_action_values(pl_module.batch_q_values(batch), batch[BATCH_ACTION]))  # [T, B, T]
    pl_module.train(was_training)
    return torch.cat(values, dim=1) if values else None


def own_data_values(pl_module: LightningModule, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor | None:
    """Q_i of the data actions on task i's own rows of every batch, [T, N]; None if no batch
    (``data_action_q_values``, its source == target entries)."""
    q = data_action_q_values(pl_module, batches)
    return None if q is None else own_task_values(q)


def _validation_batches(trainer: Trainer) -> Iterable[Mapping[str, torch.Tensor]]:
    """The validation batches of the fit: a fresh pass over the data module's loader (its batches are fixed),
    else the loader(s) given to ``fit``."""
    datamodule = getattr(trainer, "datamodule", None)
    loaders = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, list | tuple):
        return [batch for loader in loaders for batch in loader]
    return loaders
