"""In-memory multi-task replay: shards decoded once into uint8 tensors, uniform sampling per task.

Frames are stored once per state ([F, 3, S, S] uint8 over every episode of every task), and a
transition is the index of its observation frame (the frame it bootstraps from is ``bootstrap_steps``
frames on: the next one for one-step targets), so memory is about one frame per transition. Sampling
one batch is a handful of index ops, on the CPU or on whichever device the replay was moved to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from robocds.datasets.episode import Episode
from robocds.datasets.manifest import load_shard, read_manifest
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
    Manifest,
)
from robocds.envs.seeds import hash_seed

_RANDOM_HIGH = 2**62  # sample integers this large, then reduce modulo the task's size (bias < 1e-12)


@dataclass
class MultiTaskReplay:
    """Transitions of T tasks, relabel-ready: every transition carries every selected task's reward.

    Shapes (F frames, N transitions over all tasks, P proprio, T selected tasks, S image size):
    ``frames`` uint8 [F, 3, S, S], ``proprio`` float32 [F, P], ``obs_index`` int64 [N] (frame of the
    observation; the next observation is frame ``obs_index + 1``), ``action`` int64 [N],
    ``bootstrap_steps`` int64 [N] (the target's frame is ``obs_index + bootstrap_steps``: 1, or up to the
    loader's n_step), ``rewards``/``successes`` float32 [N, T], ``episode_successes`` float32 [N, T] (1 where the
    transition's episode has a return > 0 for that task, the same for all its transitions),
    ``task_start``/``task_count`` int64 [T] (task t owns transitions
    ``task_start[t] .. task_start[t] + task_count[t] - 1``).
    """

    task_names: tuple[str, ...]
    frames: torch.Tensor
    proprio: torch.Tensor
    obs_index: torch.Tensor
    action: torch.Tensor
    rewards: torch.Tensor
    successes: torch.Tensor
    episode_successes: torch.Tensor
    steps_to_success: torch.Tensor
    bootstrap_steps: torch.Tensor
    task_start: torch.Tensor
    task_count: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def num_transitions(self) -> int:
        return int(self.obs_index.shape[0])

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self._tensors())

    def _tensors(self) -> list[torch.Tensor]:
        return [
            self.frames,
            self.proprio,
            self.obs_index,
            self.action,
            self.rewards,
            self.successes,
            self.episode_successes,
            self.steps_to_success,
            self.bootstrap_steps,
            self.task_start,
            self.task_count,
        ]

    def to(self, device: str | torch.device) -> MultiTaskReplay:
        """A copy on ``device`` (e.g. the GPU: sampling then never leaves it)."""
        moved = [t.to(device) for t in self._tensors()]
        return MultiTaskReplay(self.task_names, *moved)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions of each task, uniformly with replacement, in the batch format of
        ``robocds.datasets.schema`` ([T, B, ...]). ``generator`` must live on the replay's device."""
        return self.gather(self.sample_indices(batch_size, generator))

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """int64 [T, B]: row t holds ``batch_size`` uniform draws (with replacement) among task t's transitions."""
        t = self.num_tasks
        draws = torch.randint(0, _RANDOM_HIGH, (t, batch_size), generator=generator, device=self.device)
        return self.task_start[:, None] + draws % self.task_count[:, None]

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch of the transitions at ``index`` (int64 [T, B] into the transition arrays)."""
        t, b = index.shape
        flat = index.reshape(-1)
        obs = self.obs_index.index_select(0, flat)
        ahead = self.bootstrap_steps.index_select(0, flat)

        def rows(tensor: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
            # index_select is a plain row copy: ~15x faster than advanced indexing for the uint8 frames.
            return tensor.index_select(0, at).view(t, b, *tensor.shape[1:])

        return {
            BATCH_IMAGE: rows(self.frames, obs),
            BATCH_NEXT_IMAGE: rows(self.frames, obs + ahead),
            BATCH_PROPRIO: rows(self.proprio, obs),
            BATCH_NEXT_PROPRIO: rows(self.proprio, obs + ahead),
            BATCH_ACTION: rows(self.action, flat),
            BATCH_REWARDS: rows(self.rewards, flat),
            BATCH_SUCCESSES: rows(self.successes, flat),
            BATCH_EPISODE_SUCCESSES: rows(self.episode_successes, flat),
            BATCH_STEPS_TO_SUCCESS: rows(self.steps_to_success, flat),
            BATCH_BOOTSTRAP_STEPS: ahead.view(t, b).float(),
        }


def replay_from_episodes(
    episodes_per_task: Sequence[Sequence[Episode]],
    task_names: Sequence[str],
    reward_tasks: Sequence[str],
    n_step: int = 1,
) -> MultiTaskReplay:
    """Pack decoded episodes (one list per task, in ``task_names`` order) into a ``MultiTaskReplay`` whose
    transitions bootstrap ``n_step`` frames on (fewer at an episode's end).

    ``reward_tasks`` is the order of the stored reward columns; the replay keeps the columns of
    ``task_names`` only, in that order, so ``rewards[..., i]`` is task ``task_names[i]``'s reward.
    """
    columns = [list(reward_tasks).index(name) for name in task_names]
    proprio, obs_index, action, rewards, successes, episode_successes, steps_to_success = [], [], [], [], [], [], []
    bootstrap_steps = []
    task_start, task_count = [], []
    n_frames = n_transitions = 0
    for episodes in episodes_per_task:
        if not episodes:
            raise ValueError("every task needs at least one episode")
        task_start.append(n_transitions)
        for episode in episodes:
            length = episode.length
            proprio.append(episode.proprio)
            obs_index.append(np.arange(n_frames, n_frames + length, dtype=np.int64))
            action.append(episode.actions)
            rewards.append(episode.task_rewards[:, columns])
            successes.append(episode.task_successes[:, columns])
            episode_successes.append(np.broadcast_to(episode.returns_positive(columns), (length, len(columns))))
            steps_to_success.append(episode.steps_to_success(columns))
            bootstrap_steps.append(episode.bootstrap_steps(n_step))
            n_frames += length + 1
            n_transitions += length
        task_count.append(n_transitions - task_start[-1])
    # HWC -> CHW once here, so batches come out in the model's layout without a per-step copy; filled
    # episode by episode so that loading never holds more than one extra copy of the frames.
    size = episodes_per_task[0][0].frames.shape[1]
    frames_chw = np.empty((n_frames, 3, size, size), dtype=np.uint8)
    start = 0
    for episodes in episodes_per_task:
        for episode in episodes:
            frames_chw[start : start + episode.length + 1] = episode.frames.transpose(0, 3, 1, 2)
            start += episode.length + 1
    return MultiTaskReplay(
        task_names=tuple(task_names),
        frames=torch.from_numpy(frames_chw),
        proprio=torch.from_numpy(np.concatenate(proprio)),
        obs_index=torch.from_numpy(np.concatenate(obs_index)),
        action=torch.from_numpy(np.concatenate(action)),
        rewards=torch.from_numpy(np.concatenate(rewards).astype(np.float32)),
        successes=torch.from_numpy(np.concatenate(successes).astype(np.float32)),
        episode_successes=torch.from_numpy(np.concatenate(episode_successes)),
        steps_to_success=torch.from_numpy(np.concatenate(steps_to_success)),
        bootstrap_steps=torch.from_numpy(np.concatenate(bootstrap_steps)),
        task_start=torch.tensor(task_start, dtype=torch.int64),
        task_count=torch.tensor(task_count, dtype=torch.int64),
    )


def load_task_episodes(
    root: str, manifest: Manifest, task: str, episodes: Sequence[int] | None = None, check_hash: bool = True
) -> list[Episode]:
    """Decode the episodes of ``task`` (all, or the indices in ``episodes``), verifying each shard read."""
    entry = manifest.task(task)
    wanted = None if episodes is None else frozenset(episodes)
    out = []
    for shard in entry.shards:
        in_shard = range(shard.first_episode, shard.first_episode + shard.samples)
        if wanted is not None and not any(index in wanted for index in in_shard):
            continue  # no wanted episode in this shard: not even read
        for episode in load_shard(root, manifest, entry, shard, check_hash=check_hash):
            if wanted is None or episode.meta.episode in wanted:
                out.append(episode)
    return out


def split_episodes(num_episodes: int, val_fraction: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train, val) episode indices of one task, each in increasing order.

    ``round(val_fraction * num_episodes)`` episodes (at least one) are held out, spread evenly over the
    episode order: the k-th of V held-out episodes is ``floor((k + 1/2) * num_episodes / V)``, the middle
    of the k-th of V equal stretches. Recipes lay a task's episodes out in order (a mixture's components
    one after the other, near-random first), so every stretch of at least ``num_episodes / V`` episodes,
    every such component, has one held out: the held-out set looks like the training set. 0 holds none out.
    """
    if val_fraction <= 0:
        return tuple(range(num_episodes)), ()
    n_val = max(1, round(val_fraction * num_episodes))
    if n_val >= num_episodes:
        raise ValueError(
            f"val_fraction={val_fraction}: would hold out {n_val} of a task's {num_episodes} episodes; "
            "lower it (or 0 to validate on training data)"
        )
    val = tuple((2 * k + 1) * num_episodes // (2 * n_val) for k in range(n_val))  # distinct: spacing >= 1
    held_out = frozenset(val)
    return tuple(i for i in range(num_episodes) if i not in held_out), val


def load_replay(
    root: str,
    tasks: Sequence[str] | None = None,
    episodes: dict[str, Sequence[int]] | None = None,
    manifest: Manifest | None = None,
    check_hash: bool = True,
    n_step: int = 1,
) -> MultiTaskReplay:
    """Load (and verify) a dataset, or some tasks / episode ranges of it, into a CPU ``MultiTaskReplay``."""
    manifest = manifest or read_manifest(root)
    names = list(tasks) if tasks is not None else list(manifest.task_names)
    per_task = []
    for name in names:
        wanted = None if episodes is None else episodes[name]
        per_task.append(load_task_episodes(root, manifest, name, wanted, check_hash))
    return replay_from_episodes(per_task, names, manifest.reward_tasks, n_step)


class ReplaySampler(torch.utils.data.IterableDataset):
    """``steps`` batches per iteration from a replay (infinite sampling needs an epoch length).

    Each epoch draws from its own deterministic stream: (seed, rank, epoch) -> the same batches;
    ``rank`` (the process's rank in distributed training) keeps processes from drawing identical
    batches. With ``fixed`` every iteration repeats epoch 0's batches (a validation set). Setting
    ``skip`` before an iteration starts it ``skip`` batches into the epoch (a resumed run), with the
    same batches from there on as an uninterrupted epoch.
    """

    def __init__(
        self, replay: MultiTaskReplay, batch_size: int, steps: int, seed: int = 0, fixed: bool = False, rank: int = 0
    ):
        super().__init__()
        self.replay = replay
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.fixed = fixed
        self.rank = rank
        self.epoch = 0
        self.skip = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        generator = torch.Generator(device=self.replay.device)
        generator.manual_seed(hash_seed(self.seed, self.rank, 0 if self.fixed else self.epoch))
        if not self.fixed:
            self.epoch += 1
        skip, self.skip = min(self.skip, self.steps), 0
        for _ in range(skip):
            self.replay.sample_indices(self.batch_size, generator)  # the draws of the batches already trained on
        for _ in range(self.steps - skip):
            yield self.replay.sample(self.batch_size, generator)
