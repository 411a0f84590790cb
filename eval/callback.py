"""A Lightning callback that rolls the policy being trained out in the arm every N steps."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

from robocds.eval.evaluate import rollout, summarize
from robocds.eval.policy import ModulePolicy, module_env


class SuccessRateCallback(Callback):
    """Logs ``eval/success/<task>`` and ``eval/success_average`` every ``every_n_steps`` steps.

    Runs on global rank 0 only (the others wait at the next collective), with a few episodes per task
    on evaluation seeds, so a success curve appears beside the losses in TensorBoard. The env is built
    from the settings the model was linked with (those of its data), as ``robocds-eval`` builds it.
    Add it with ``--config eval_during_fit`` (``train/configs/eval_during_fit.yaml``).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        episodes_per_task: int = 4,
        tasks: Sequence[str] | None = None,
        workers: int = 0,
        base_seed: int = 0,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be >= 1")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task={episodes_per_task}: must be >= 1")
        self.every_n_steps = every_n_steps
        self.episodes_per_task = episodes_per_task
        self.tasks = list(tasks) if tasks else None
        self.workers = workers
        self.base_seed = base_seed

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every_n_steps:
            self.evaluate(trainer, pl_module)  # the curve always ends at the last step

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        policy = ModulePolicy(pl_module)
        tasks = self.tasks or policy.task_names
        settings = module_env(pl_module, type(pl_module).__name__)
        records, _ = rollout(
            policy, tasks, self.episodes_per_task, self.workers, settings, self.base_seed, progress=False
        )
        rates = {task: r.success_rate for task, r in summarize(records, tasks).items()}
        metrics = {f"eval/success/{task}": rate for task, rate in rates.items()}
        metrics["eval/success_average"] = sum(rates.values()) / len(rates)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        return metrics
