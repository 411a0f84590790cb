"""``OfflineDataModule``: the dataset as a LightningDataModule (in-memory replay or streaming shards).

Construction reads only ``manifest.json`` (cheap, no decoding), so the LightningCLI can link
``num_tasks``, ``task_names``, ``image_size``, ``proprio_dim``, ``num_actions`` and ``env`` (the env
settings the data was recorded with, which evaluation rebuilds the env from) into the model with
``apply_on="instantiate"``. ``setup`` does the heavy part (decoding into memory, or nothing
for streaming but the small validation set).

Training batches follow ``robocds.datasets.schema`` ([T, B, ...], T = ``num_tasks`` in the order of
``task_names``; the rewards/successes last axis is in the same order). Validation batches have the
same format and come from held-out episodes: ``val_fraction`` of every task's episodes, spread
evenly over its episode order (``robocds.datasets.replay.split_episodes``), never appear in training
batches; the same ``val_batches`` batches are drawn at every validation, so a "best" checkpoint can
monitor a validation metric.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from robocds.datasets.manifest import read_manifest
from robocds.datasets.replay import (
    MultiTaskReplay,
    ReplaySampler,
    load_task_episodes,
    replay_from_episodes,
    split_episodes,
)
from robocds.datasets.schema import Manifest
from robocds.datasets.streaming import StreamingMultiTaskDataset
from robocds.errors import ConfigError

LOADERS = ("memory", "streaming")

# Our iterable datasets' __len__ is exact: each DataLoader worker yields its own share of the epoch's
# batches (see StreamingMultiTaskDataset), which is what Lightning's generic warning asks for.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


@dataclass(frozen=True)
class DataSettings:
    """The data module's arguments, checked (see ``OfflineDataModule`` for their meaning)."""

    root: str
    batch_size: int
    loader: str
    device: str
    num_workers: int
    seed: int
    steps_per_epoch: int
    val_fraction: float
    val_batches: int
    val_batch_size: int
    shuffle_buffer: int
    resampled: bool
    verify: bool
    n_step: int

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError(f"root={self.root!r}: must name a dataset folder or URL")
        for name in ("batch_size", "steps_per_epoch", "val_batch_size", "shuffle_buffer", "n_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an int >= 1")
        for name in ("num_workers", "val_batches", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r}: must be an int >= 0")
        if self.loader not in LOADERS:
            raise ConfigError(f"loader={self.loader!r}: must be one of {LOADERS}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction!r}: must be in [0, 1)")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(f"device={self.device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'") from None


def run_seed() -> int:
    """The seed ``seed_everything`` set in this process (Lightning records it in ``PL_GLOBAL_SEED``), else 0."""
    value = os.environ.get("PL_GLOBAL_SEED", "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"PL_GLOBAL_SEED={value!r}: expected an integer seed") from None


class _EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader over an epoch-aware dataset (``ReplaySampler``, ``StreamingMultiTaskDataset``), resumable.

    Each iteration tells the dataset which epoch starts (a fresh sample stream per epoch) and how many of
    its batches to skip. ``state_dict`` / ``load_state_dict`` are Lightning's resumable-loader interface
    (saved in the checkpoint's fit-loop state, restored before the first batch): the position is the epoch
    being iterated and the batches of it *consumed* by training, as counted by ``consumed`` (the trainer's
    count; Lightning fetches a batch ahead, so the batches this loader has yielded would be one too many).
    """

    def __init__(self, *args: Any, consumed: Callable[[], int | None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0  # the epoch the next iteration starts
        self.skip = 0  # batches of that epoch consumed before a resume
        self._consumed = consumed
        self._current: int | None = None  # the epoch being iterated
        self._yielded = 0  # batches of it yielded (skipped ones included)

    def __iter__(self) -> Iterator[Any]:
        # Set before the workers start: they are forked from this process with the dataset as it is now.
        self.dataset.epoch, self.dataset.skip = self.epoch, self.skip
        self._current, self._yielded = self.epoch, self.skip
        self.epoch, self.skip = self.epoch + 1, 0
        return self._count(super().__iter__())

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._current is None:  # not iterated yet (e.g. restored, then saved again before training)
            return {"epoch": self.epoch, "batches": self.skip}
        consumed = self._consumed() if self._consumed is not None else None
        return {"epoch": self._current, "batches": self._yielded if consumed is None else consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = state_dict.get("epoch"), state_dict.get("batches")
        for key, value in (("epoch", epoch), ("batches", batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"training loader state: {key}={value!r} in the checkpoint, expected an int >= 0")
        if batches >= len(self):  # the epoch was finished: the next one starts from its first batch
            epoch, batches = epoch + 1, 0
        self.epoch, self.skip, self._current = epoch, batches, None


class OfflineDataModule(pl.LightningDataModule):
    """Multi-task offline data for the learner, from a dataset written by ``robocds-generate``.

    Args:
        root: dataset folder (or URL for ``loader="streaming"``) holding ``manifest.json``.
        batch_size: transitions per task per batch (B); a batch holds T x B transitions.
        loader: ``"memory"`` (decode once into uint8 tensors, sample uniformly per task; the fast
            path) or ``"streaming"`` (WebDataset pipelines over the shards, for data beyond RAM).
        device: where the in-memory replay lives and is sampled: ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            or ``"auto"`` (the Trainer's device). Streaming batches are always built on the CPU.
        num_workers: DataLoader worker processes for ``"streaming"``; the in-memory sampler runs in
            the training process (sampling is a few index ops) and ignores it.
        seed: seeds sampling (per epoch) and the fixed validation batches. None (the default): the run's
            seed, as given to ``seed_everything`` (the CLI's ``--seed_everything``), so every training
            seed draws its own batch stream; 0 when no seed was set.
        steps_per_epoch: training batches per epoch (the sampler is infinite; this sets how often
            validation and checkpointing happen).
        tasks: the tasks to train on, in batch-row order; None: every task of the dataset in
            manifest order.
        val_fraction: fraction of every task's episodes held out for validation (at least one), spread
            evenly over the episode order so that every part of a mixture recipe is represented
            (``split_episodes``); 0 validates on training episodes.
        val_batches: number of fixed validation batches (0: no validation loader, no held-out episodes).
        val_batch_size: transitions per task per validation batch (default: ``batch_size``).
        shuffle_buffer: streaming shuffle buffer, in transitions per task.
        resampled: streaming: draw shards with replacement per worker (``True``, any worker count)
            or split a per-epoch shuffled shard list by node and worker (``False``).
        verify: check every shard's sha256 against the manifest as it is read, into memory or streamed
            (the bytes are hashed as they arrive: no second read; the size is checked either way).
        n_step: how many steps on each transition's target bootstraps (``next_image`` is that frame; fewer at an
            episode's end, ``bootstrap_steps`` in the batch): 1 is the one-step TD target; n sums the
            discounted rewards of the data's next n steps (training and validation batches alike).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        loader: str = "memory",
        device: str = "cpu",
        num_workers: int = 0,
        seed: int | None = None,
        steps_per_epoch: int = 1000,
        tasks: list[str] | None = None,
        val_fraction: float = 0.1,
        val_batches: int = 20,
        val_batch_size: int | None = None,
        shuffle_buffer: int = 2000,
        resampled: bool = True,
        verify: bool = True,
        n_step: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.settings = DataSettings(
            root=str(root),
            batch_size=batch_size,
            loader=loader,
            device=device,
            num_workers=num_workers,
            seed=run_seed() if seed is None else seed,
            steps_per_epoch=steps_per_epoch,
            val_fraction=float(val_fraction),
            val_batches=val_batches,
            val_batch_size=batch_size if val_batch_size is None else val_batch_size,
            shuffle_buffer=shuffle_buffer,
            resampled=resampled,
            verify=verify,
            n_step=n_step,
        )
        self.hparams["seed"] = self.settings.seed  # the seed actually used, in checkpoints and hparams.yaml
        self.manifest: Manifest = read_manifest(self.settings.root)
        if tasks is not None and len(tasks) == 0:
            raise ConfigError("tasks=[]: select at least one task, or None for all")
        names = list(tasks) if tasks is not None else list(self.manifest.task_names)
        if len(set(names)) != len(names):
            raise ConfigError(f"tasks={names}: a task is listed twice")
        for name in names:
            try:
                self.manifest.task(name)
            except ValueError as err:
                raise ConfigError(f"tasks: {err}") from None
        self._task_names = names
        # No validation loader, nothing to hold out: every episode trains.
        held_out = self.settings.val_fraction if self.settings.val_batches > 0 else 0.0
        self._splits = {name: split_episodes(self.manifest.task(name).episodes, held_out) for name in names}
        self.train_replay: MultiTaskReplay | None = None
        self.val_replay: MultiTaskReplay | None = None
        self._is_set_up = False
        self._held_out_transitions: dict[str, int] = {}  # streaming: what the training stream never sees
        self._train_loader: _EpochLoader | None = None
        self._loader_state: dict[str, int] | None = None  # restored from a checkpoint, applied to the next loader

    # ------------------------------------------------------------------ what the model needs to know

    @property
    def num_tasks(self) -> int:
        return len(self._task_names)

    @property
    def task_names(self) -> list[str]:
        return list(self._task_names)

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    @property
    def proprio_dim(self) -> int:
        return self.manifest.proprio_dim

    @property
    def num_actions(self) -> int:
        return self.manifest.num_actions

    @property
    def env(self) -> dict[str, Any]:
        """The manifest's env settings as plain JSON (``robocds.envs.suite.EnvSettings``): carried into checkpoints."""
        return self.manifest.env.to_json_dict()

    @property
    def holds_out_episodes(self) -> bool:
        """Whether validation batches come from episodes training never draws (``val_batches`` >= 1 and
        ``val_fraction`` > 0); otherwise they are drawn from training episodes, or there are none."""
        return any(len(val_range) for _, val_range in self._splits.values())

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """Shape of one image in a batch: (3, H, W)."""
        return (3, self.image_size, self.image_size)

    # ------------------------------------------------------------------ loading

    def _device(self) -> torch.device:
        if self.settings.device == "auto":
            return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        return torch.device(self.settings.device)

    def setup(self, stage: str | None = None) -> None:
        if self._is_set_up:
            return  # setup runs once per stage; the data does not change between them
        self._is_set_up = True
        s = self.settings
        device = self._device()
        held_out = self.holds_out_episodes
        if s.loader == "memory":
            train_eps, val_eps = [], []
            for name in self._task_names:
                held = frozenset(self._splits[name][1])
                episodes = load_task_episodes(s.root, self.manifest, name, check_hash=s.verify)
                train_eps.append([e for e in episodes if e.meta.episode not in held])
                val_eps.append([e for e in episodes if e.meta.episode in held])
            reward_tasks = self.manifest.reward_tasks
            self.train_replay = replay_from_episodes(train_eps, self._task_names, reward_tasks, s.n_step).to(device)
            self.val_replay = (
                replay_from_episodes(val_eps, self._task_names, reward_tasks, s.n_step).to(device)
                if held_out
                else self.train_replay
            )
        elif s.val_batches > 0:
            per_task = []
            for name in self._task_names:
                val_range = self._splits[name][1]
                # Without held-out episodes, validate on the first shard's worth of training episodes.
                wanted = val_range if len(val_range) else range(self.manifest.task(name).shards[0].samples)
                per_task.append(load_task_episodes(s.root, self.manifest, name, wanted, check_hash=s.verify))
                if len(val_range):
                    self._held_out_transitions[name] = sum(e.length for e in per_task[-1])
            self.val_replay = replay_from_episodes(per_task, self._task_names, self.manifest.reward_tasks, s.n_step)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        s = self.settings
        if s.loader == "memory":
            assert self.train_replay is not None, "call setup() first"
            rank = self.trainer.global_rank if self.trainer is not None else 0
            dataset = ReplaySampler(self.train_replay, s.batch_size, s.steps_per_epoch, seed=s.seed, rank=rank)
            loader = _EpochLoader(dataset, batch_size=None, num_workers=0, consumed=self._batches_consumed)
        else:
            if not s.resampled:
                # Checked here, in the main process: failing inside DataLoader workers is slow and obscure.
                world = self.trainer.world_size if self.trainer is not None else 1
                for name in self._task_names:
                    shards = len(self.manifest.task(name).shards)
                    if shards < world * max(1, s.num_workers):
                        raise ConfigError(
                            f"resampled=False: task {name} has {shards} shard(s), fewer than {world} process(es) x "
                            f"{max(1, s.num_workers)} worker(s); use resampled=True or fewer workers"
                        )
                    # Batches are whole (never partial): a stream of fewer transitions never yields one and the
                    # repeated pass would spin for ever.
                    training = self.manifest.task(name).transitions - self._held_out_transitions.get(name, 0)
                    if training < s.batch_size:
                        raise ConfigError(
                            f"resampled=False: task {name} has {training} training transition(s), fewer than "
                            f"batch_size={s.batch_size}: no batch could ever be drawn; use resampled=True or a "
                            "smaller batch_size"
                        )
            dataset = StreamingMultiTaskDataset(
                s.root,
                s.batch_size,
                s.steps_per_epoch,
                tasks=self._task_names,
                train_episodes={name: split[0] for name, split in self._splits.items()},
                shuffle_buffer=s.shuffle_buffer,
                resampled=s.resampled,
                seed=s.seed,
                manifest=self.manifest,
                verify=s.verify,
                n_step=s.n_step,
            )
            loader = _EpochLoader(
                dataset,
                batch_size=None,
                num_workers=s.num_workers,
                pin_memory=self._device().type == "cuda",
                prefetch_factor=4 if s.num_workers > 0 else None,
                consumed=self._batches_consumed,
            )
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
        self._train_loader = loader
        return loader

    def _batches_consumed(self) -> int | None:
        """Training batches of the current epoch the trainer has taken (None without a trainer)."""
        if self.trainer is None:
            return None
        return self.trainer.fit_loop.batch_idx + 1

    def val_dataloader(self) -> torch.utils.data.DataLoader | list:
        s = self.settings
        if s.val_batches == 0:
            return []
        assert self.val_replay is not None, "call setup() first"
        dataset = ReplaySampler(self.val_replay, s.val_batch_size, s.val_batches, seed=s.seed + 1, fixed=True)
        return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)

    # ------------------------------------------------------------------ checkpointed state

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (epoch, batches consumed), also held by the loader itself.

        Lightning restores a loader's own state only when its fit loop restarts mid-way, which a
        ``max_epochs`` run resumed from an end-of-epoch checkpoint does not: this copy covers that case.
        """
        return {} if self._train_loader is None else {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_loader" in state_dict:
            self._loader_state = dict(state_dict["train_loader"])
        elif "train_epochs_started" in state_dict:  # written before the loader kept a position within the epoch
            self._loader_state = {"epoch": int(state_dict["train_epochs_started"]), "batches": 0}
        if self._train_loader is not None and self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)
