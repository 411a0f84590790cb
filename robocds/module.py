"""The Lightning module: a multi-task conservative Q-network trained on relabeled, routed batches."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from robocds.augment import random_intensity, random_shift
from robocds.batch import as_chw_batch, check_batch, flatten_rows
from robocds.bc import BCTerms, bc_terms, bc_weights
from robocds.config import (
    LR_SCHEDULES,
    OBJECTIVES,
    CQLConfig,
    EncoderConfig,
    LRSchedule,
    Objective,
    from_dict,
    stored_cql,
)
from robocds.cql import (
    CQLTerms,
    conservative_weights,
    cql_terms,
    data_action_values,
    feature_coadaptation,
    monte_carlo_returns,
    n_step_targets,
    next_state_values,
)
from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_BOOTSTRAP_STEPS,
    BATCH_EPISODE_SUCCESSES,
    BATCH_IMAGE,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_SUCCESSES,
)
from robocds.errors import CheckpointError, ConfigError
from robocds.qnet import MultiTaskQNetwork, polyak_update
from robocds.sharing import Routing, fixed_weights, own_mask, relabel

# (q_data [T, B, T] detached Q of the data actions, the training batch) -> Routing
Router = Callable[[Tensor, Mapping[str, Tensor]], Routing]
AUGMENT_STATE = "augment"  # checkpoint key: the augmentation seed and the number of augmented training batches


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 finaliser over each value; a few microseconds)."""
    mask = (1 << 64) - 1
    x = 0
    for value in values:
        x = (x ^ value) + 0x9E3779B97F4A7C15 & mask
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & mask
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & mask
        x ^= x >> 31
    return x >> 1


# Hyperparameters that fix the network's shapes or what its outputs mean: a checkpoint that differs in one of
# them cannot be resumed into this module (its tensors would not fit, or would fit and mean something else).
NETWORK_HPARAMS = ("num_tasks", "num_actions", "image_size", "proprio_dim", "task_names", "encoder")
NETWORK_CQL_FIELDS = ("num_q_heads", "head_hidden", "head_layernorm")


def check_same_network(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """A ``CheckpointError`` naming the first setting in which a checkpoint's network differs from this one's.

    Lightning loads a checkpoint's tensors into the module built from this run's settings (``--ckpt_path``);
    without this check a checkpoint trained on another dataset ends in torch's size-mismatch traceback.
    """

    def plain(value: Any) -> Any:  # tuples and lists compare alike (YAML and checkpoints differ there)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    pairs = [(name, saved.get(name), current.get(name)) for name in NETWORK_HPARAMS if name in saved]
    saved_cql, current_cql = stored_cql(saved.get("cql")), current.get("cql") or {}
    pairs += [(f"cql.{name}", saved_cql.get(name), current_cql.get(name)) for name in NETWORK_CQL_FIELDS
              if name in saved_cql and name in current_cql]  # fmt: skip
    for name, was, now in pairs:
        if plain(was) != plain(now):
            raise CheckpointError(
                f"the checkpoint's {name}={was!r} differs from this run's {name}={now!r}: it was trained on "
                "another dataset or network; resume with the data and model settings it was trained with"
            )


def own_data_router(q_data: Tensor, batch: Mapping[str, Tensor] | None = None) -> Routing:
    """Routing of validation: every task on its own data only (comparable across sharing modes)."""
    t, b, _ = q_data.shape
    return Routing(weights=fixed_weights("none", t, b, q_data.device), zero_shared_rewards=False, thresholds=None)


def cosine_to_zero(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Half a cosine from the optimizer's learning rate (step 0) to 0 (step ``total_steps``), then 0."""
    if total_steps is None or int(total_steps) < 1:
        raise ConfigError(
            f"lr_schedule='cosine' decays over trainer.max_steps, which is {total_steps}: set --trainer.max_steps"
        )
    total = int(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )


class MultiTaskCQL(LightningModule):
    """Multi-task discrete CQL on images (+ proprio), with a pluggable router for data sharing.

    One training step on a batch with T task rows of B transitions each (``robocds.datasets.schema``):

    1. one online encoder pass over the T * B observations -> Q [K, T, B, T, A] (every head, source row,
       transition, target task, action), and one no-grad target pass over the next observations;
    2. the router (set by the ``robocds.callbacks.DataSharing`` callback) turns the detached Q-values
       of the data actions, min over heads, [T, B, T], and the batch (``share_successes`` reads its
       ``episode_successes``) into routing weights [T, B, T];
    3. rewards and terminals are relabeled for every target task, TD targets built, and the CQL terms
       weighted and normalised as documented in ``robocds.cql``.

    Shapes and counts (``num_tasks``, ``num_actions``, ``image_size``, ``proprio_dim``, ``task_names``) and
    ``env`` (the settings of the env the data was recorded in, a plain dict of
    ``robocds.envs.suite.EnvSettings``; evaluation rebuilds the env from it) are linked from the data module
    by the CLI. ``encoder`` and ``cql`` also accept plain dicts (as stored in
    checkpoints). ``optimizer`` builds the optimizer from the online network's parameters.

    ``compile``: at the start of ``fit``, compile the online and target networks with ``torch.compile``
    (inductor), forward and backward; the update's routing and loss maths stay eager. Meant for GPUs
    (``--config gpu``): on a 2-core CPU compiling took about 100 s and the compiled step was no faster
    (docs/PERFORMANCE.md). Only training compiles: evaluation and ``act`` rebuild the module eagerly.

    ``objective``: ``"cql"`` (the above), or the reference methods ``"bc"`` / ``"filtered_bc"``: behaviour cloning
    of each task's own data actions (filtered: of its own successful episodes only) with the Q-values read as
    action logits (``robocds.bc``). They train the same network, act the same way and write the same
    checkpoints; training uses neither the target pass nor the router. Validation logs the CQL terms of the
    outputs read as Q-values in every objective (so ``val/td_loss`` exists); in BC, ``val/loss`` is BC's loss.

    ``lr_schedule``: ``"constant"``, or ``"cosine"``: the learning rate decays from the optimizer's to 0 over the
    trainer's ``max_steps`` (half a cosine), stepped every optimizer step. ``lr_scheduler`` (any
    ``LRSchedulerCallable``) is the general form; give one or the other.
    """

    def __init__(
        self,
        num_tasks: int,
        num_actions: int,
        image_size: int,
        proprio_dim: int,
        task_names: Sequence[str] | None = None,
        env: dict[str, Any] | None = None,
        encoder: EncoderConfig = EncoderConfig(),
        cql: CQLConfig = CQLConfig(),
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        objective: Objective = "cql",
        lr_schedule: LRSchedule = "constant",
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r}: must be one of {list(OBJECTIVES)}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={lr_schedule!r}: must be one of {list(LR_SCHEDULES)}")
        if lr_schedule != "constant" and lr_scheduler is not None:
            raise ValueError(
                f"lr_schedule={lr_schedule!r} and an lr_scheduler: give one or the other "
                "(with --model.lr_scheduler, also pass --model.lr_schedule constant)"
            )
        for name, value in (("num_tasks", num_tasks), ("num_actions", num_actions), ("image_size", image_size)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}: must be >= 1")
        if int(proprio_dim) < 0:
            raise ValueError(f"proprio_dim={proprio_dim}: must be >= 0")
        task_names = [f"task_{i}" for i in range(num_tasks)] if task_names is None else [str(n) for n in task_names]
        if len(task_names) != num_tasks:
            raise ValueError(f"task_names has {len(task_names)} names {task_names} but num_tasks={num_tasks}")
        self.encoder_config = from_dict(EncoderConfig, encoder)
        self.cql_config = from_dict(CQLConfig, cql)
        if env is not None and env.get("image_size") != image_size:
            raise ValueError(f"env={env}: its image_size differs from image_size={image_size}")
        if self.encoder_config.use_proprio and proprio_dim < 1:
            raise ValueError(f"proprio_dim={proprio_dim} but encoder.use_proprio=True: set use_proprio to false")

        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        # Plain containers only, so checkpoints load with torch.load(weights_only=True) and evaluation can
        # rebuild the model from them (under the CLI these are already the parsed config's dicts).
        self.hparams["task_names"] = task_names
        self.hparams["encoder"] = asdict(self.encoder_config)
        self.hparams["cql"] = asdict(self.cql_config)

        self.num_tasks, self.num_actions = int(num_tasks), int(num_actions)
        self.image_size, self.proprio_dim = int(image_size), int(proprio_dim)
        self.task_names = task_names
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.compile_networks = bool(compile)
        self.objective = str(objective)
        self.lr_schedule = str(lr_schedule)
        self.q = MultiTaskQNetwork(
            self.encoder_config,
            image_size=self.image_size,
            proprio_dim=self.proprio_dim,
            num_tasks=self.num_tasks,
            num_actions=self.num_actions,
            num_heads=self.cql_config.num_q_heads,
            head_hidden=self.cql_config.head_hidden,
            head_layernorm=self.cql_config.head_layernorm,
            head_dropout=self.cql_config.head_dropout,
        )
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.router: Router | None = None  # set by the DataSharing callback
        # Augmentation draws from its own generator, re-seeded from (seed, rank, batch count) at every training
        # batch: a resumed run continues the same shifts, which a global-RNG stream (re-seeded at start) would
        # not. The seed comes from the global RNG (seeded by the CLI) and is kept in checkpoints.
        self.augment_seed = int(torch.randint(0, 2**62, ()).item())
        self.augmented_batches = 0
        self._augment_rng: torch.Generator | None = None

    def on_fit_start(self) -> None:
        if self.compile_networks:
            # In place (nn.Module.compile): parameter names, hence checkpoints, stay those of the eager module.
            self.q.compile()
            self.q_target.compile()

    # ------------------------------------------------------------------ losses
    def compute_terms(self, batch: Mapping[str, Tensor], router: Router) -> tuple[CQLTerms, Routing]:
        """CQL terms of a training-format batch under ``router``; augments only in training mode."""
        t, b = check_batch(batch, self.num_tasks, self.image_size, self.proprio_dim)
        cfg = self.cql_config
        images, next_images = flatten_rows(batch[BATCH_IMAGE]), flatten_rows(batch[BATCH_NEXT_IMAGE])
        proprio, next_proprio = flatten_rows(batch[BATCH_PROPRIO]), flatten_rows(batch[BATCH_NEXT_PROPRIO])
        images, next_images = self._augmented(images, next_images)
        k, a = cfg.num_q_heads, self.num_actions
        # Loss maths in float32 even under bf16 autocast (logsumexp and small TD errors need the mantissa).
        dr3, next_features = cfg.dr3_weight > 0, None
        if dr3:
            q, features = self.q.values_and_features(images, proprio)
            if cfg.dr3_next_features == "online":
                next_features = self.q.values_and_features(next_images, next_proprio)[1]
        else:
            q = self.q(images, proprio)
        q = q.float().view(k, t, b, t, a)
        with torch.no_grad():
            if dr3 and cfg.dr3_next_features == "target":  # the targets' own pass gives phi(s'): no extra one
                next_q, next_features = self.q_target.values_and_features(next_images, next_proprio)
            else:
                next_q = self.q_target(next_images, next_proprio)
            next_q = next_q.float().view(k, t, b, t, a)
            next_q_online = None
            if cfg.target == "double":
                next_q_online = self.q(next_images, next_proprio).float().view(k, t, b, t, a)
            next_values = next_state_values(next_q, next_q_online)  # [T, B, T]
            # Routing reads the same forward pass, detached: no second encoder pass (min over heads = conservative).
            routing = router(data_action_values(q.detach(), batch[BATCH_ACTION]).min(dim=0).values, batch)
            rewards, dones = relabel(batch[BATCH_REWARDS], batch[BATCH_SUCCESSES], routing.zero_shared_rewards)
            # UDS: a shared transition's rewards are unknown, so are its return and whether its episode solved the task.
            steps, successes = batch[BATCH_STEPS_TO_SUCCESS], batch[BATCH_EPISODE_SUCCESSES]
            if routing.zero_shared_rewards:
                unknown = ~own_mask(t, q.device)
                steps = steps.masked_fill(unknown, math.inf)  # never solved, as far as it is known
                successes = successes.masked_fill(unknown, 0.0)
            targets = n_step_targets(
                cfg.reward_scale * rewards,
                dones,
                steps,
                batch[BATCH_BOOTSTRAP_STEPS],
                next_values,
                cfg.gamma,
                cfg.reward_scale,
            )
            if cfg.mc_lower_bound:
                returns = monte_carlo_returns(steps, cfg.gamma)
                targets = torch.maximum(targets, cfg.reward_scale * returns)
            if cfg.target_bounds is not None:
                low, high = cfg.target_bounds
                targets = targets.clamp(cfg.reward_scale * low, cfg.reward_scale * high)
            conservative = conservative_weights(
                cfg.conservative_weighting,
                routing.weights,
                q,
                batch[BATCH_ACTION],
                successes,
                cfg.failed_episode_weight,
            )
        mean_elsewhere = cfg.conservative_weighting == "success_else_mean"
        terms = cql_terms(
            q, batch[BATCH_ACTION], targets, routing.weights, cfg.alpha, cfg.td_loss, conservative, mean_elsewhere
        )
        if dr3:
            coadaptation = feature_coadaptation(features, next_features)
            terms = replace(terms, loss=terms.loss + cfg.dr3_weight * coadaptation, coadaptation=coadaptation)
        return terms, routing

    def compute_bc_terms(self, batch: Mapping[str, Tensor]) -> BCTerms:
        """Behaviour-cloning terms of a training-format batch (``robocds.bc``; filtered when the objective is
        ``filtered_bc``): one online pass over the observations, no target pass; augments only in training."""
        t, b = check_batch(batch, self.num_tasks, self.image_size, self.proprio_dim)
        cfg = self.cql_config
        images, proprio = flatten_rows(batch[BATCH_IMAGE]), flatten_rows(batch[BATCH_PROPRIO])
        (images,) = self._augmented(images)
        q = self.q(images, proprio).float().view(cfg.num_q_heads, t, b, t, self.num_actions)
        weights = bc_weights(batch[BATCH_EPISODE_SUCCESSES], filtered=self.objective == "filtered_bc")
        return bc_terms(q, batch[BATCH_ACTION], weights)

    def _augmented(self, *frames: Tensor) -> tuple[Tensor, ...]:
        """The frames as training sees them: each shifted, then jittered, on its own draw; as given outside training."""
        cfg = self.cql_config
        if not self.training or (cfg.augment_pad == 0 and cfg.augment_jitter == 0.0):
            return frames
        generator = self._augment_generator(frames[0].device)
        return tuple(
            random_intensity(random_shift(f, cfg.augment_pad, generator), cfg.augment_jitter, generator) for f in frames
        )

    def _augment_generator(self, device: torch.device) -> torch.Generator:
        """The generator of this training batch's shifts, seeded from (seed, rank, batch count) alone."""
        if self._augment_rng is None or self._augment_rng.device != device:
            self._augment_rng = torch.Generator(device=device)
        self._augment_rng.manual_seed(mix_seed(self.augment_seed, self.global_rank, self.augmented_batches))
        self.augmented_batches += 1
        return self._augment_rng

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[AUGMENT_STATE] = {"seed": self.augment_seed, "batches": self.augmented_batches}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_same_network(checkpoint.get("hyper_parameters") or {}, dict(self.hparams))
        state = checkpoint.get(AUGMENT_STATE)
        if state is None:  # written before the augmentation stream was checkpointed: continue from the step count
            self.augmented_batches = int(checkpoint.get("global_step", 0))
            return
        self.augment_seed, self.augmented_batches = int(state["seed"]), int(state["batches"])

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms: CQLTerms | BCTerms
        if self.objective != "cql":
            terms = self.compute_bc_terms(batch)
        elif self.router is None:
            raise RuntimeError(
                "MultiTaskCQL has no data-sharing router: add robocds.callbacks.DataSharing(mode=...) to the "
                "Trainer's callbacks (the CLI does this through its `sharing` section)"
            )
        else:
            terms, _ = self.compute_terms(batch, self.router)
        metrics = terms.metrics()
        self.log("train/loss", metrics.pop("loss"), prog_bar=True)
        self.log_dict({f"train/{name}": value for name, value in metrics.items()})
        return terms.loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        terms, _ = self.compute_terms(batch, own_data_router)
        metrics = {f"val/{name}": value for name, value in terms.metrics().items() if name != "routed_weight"}
        greedy = self.q_values(flatten_rows(batch[BATCH_IMAGE]), flatten_rows(batch[BATCH_PROPRIO]))
        t, b = batch[BATCH_ACTION].shape
        # Greedy action of task i on task i's own data vs the data action (agreement with the behaviour policy).
        greedy = greedy.argmax(dim=-1).view(t, b, t).diagonal(dim1=0, dim2=2).transpose(0, 1)  # [T, B]
        metrics["val/action_agreement"] = (greedy == batch[BATCH_ACTION]).float().mean()
        if self.objective != "cql":  # BC's own terms on held-out data; val/loss becomes the loss it optimises
            metrics.update({f"val/{name}": value for name, value in self.compute_bc_terms(batch).metrics().items()})
        self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=t * b)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # After the optimizer has actually stepped (this hook is skipped on gradient-accumulation steps).
        if (self.global_step + 1) % self.cql_config.target_update_period == 0:
            polyak_update(self.q_target, self.q, self.cql_config.tau)

    def configure_optimizers(self) -> Any:
        try:
            optimizer = self.optimizer_factory(self.q.parameters())
        except ValueError as err:  # torch's own check of a setting, e.g. "Invalid learning rate: -1.0"
            raise ConfigError(f"--model.optimizer: {err}") from err
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
        elif self.lr_schedule == "cosine":
            scheduler = cosine_to_zero(optimizer, self.trainer.max_steps)
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ acting
    def _observation(
        self, image: Tensor | np.ndarray, proprio: Tensor | np.ndarray | None
    ) -> tuple[Tensor, Tensor | None]:
        images = as_chw_batch(image, self.image_size).to(self.device)
        if proprio is not None:
            proprio = torch.as_tensor(proprio, dtype=torch.float32, device=self.device).reshape(images.shape[0], -1)
            if proprio.shape[1] != self.proprio_dim:
                raise ValueError(
                    f"proprio has {proprio.shape[1]} values per frame: expected proprio_dim={self.proprio_dim}"
                )
        return images, proprio

    @torch.no_grad()
    def q_values(self, image: Tensor | np.ndarray, proprio: Tensor | np.ndarray | None = None) -> Tensor:
        """Conservative Q-values (min over heads) [N, T, A] of frames in either layout (see ``act``)."""
        images, proprio = self._observation(image, proprio)
        return self.q(images, proprio).float().min(dim=0).values

    @torch.no_grad()
    def batch_q_values(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Conservative Q-values [T_src, B, T_tgt, A] of a training-format batch's observations (no augmentation).

        ``data_action_values(q, batch[BATCH_ACTION])`` then gives Q of every target task at the data's actions.
        """
        t, b = batch[BATCH_ACTION].shape
        q = self.q_values(flatten_rows(batch[BATCH_IMAGE]), flatten_rows(batch[BATCH_PROPRIO]))
        return q.view(t, b, t, -1)

    @torch.no_grad()
    def act(self, image: Tensor | np.ndarray, proprio: Tensor | np.ndarray | None = None) -> Tensor:
        """Greedy action of every task.

        Args:
            image: uint8 frames [N, H, W, 3] (as the environment returns them) or [N, 3, H, W], numpy or
                torch; a single frame [H, W, 3] / [3, H, W] counts as N = 1. The layout is read from the
                position of the size-3 axis.
            proprio: float [N, P] (or [P] for one frame); required when the encoder fuses proprio.

        Returns:
            int64 [N, T] on the module's device: column t is task t's greedy action (``task_names[t]``).
            No augmentation is applied, whatever the training mode.
        """
        return self.q_values(image, proprio).argmax(dim=-1)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int = 0, dataloader_idx: int = 0) -> Tensor:
        """``{"image": [N, ...] frames, "proprio": [N, P]}`` -> greedy actions int64 [N, T]."""
        return self.act(batch[BATCH_IMAGE], batch.get(BATCH_PROPRIO))
