"""Transition alignment, end to end: hand-made episodes written by the project's writer, read by both loaders.

Every frame and proprio vector encodes (episode, step), actions are ``step % 8`` and each task is solved at
known steps, so every sampled transition can be checked against the answer: image = frame t, next image =
frame t + 1, proprio likewise, action = actions[t], rewards/successes = those of step t (the reward received
on the transition t -> t + 1, task k solved in s_{t+1}), episode_successes = 1 iff the episode solves k at
some step, steps_to_success = the steps after t until k is first solved; with ``n_step`` n the next image is
frame min(t + n, L) and bootstrap_steps that distance. An off-by-one anywhere (frame strip, obs index, reward
row, column order, window) fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from robocds.datasets.datamodule import OfflineDataModule
from robocds.datasets.episode import Episode, encode_episode
from robocds.datasets.generate import plan_shards, write_manifest
from robocds.datasets.manifest import summarise_shard, write_shard_record
from robocds.datasets.recipe import Recipe, TaskRecipe
from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_BOOTSTRAP_STEPS,
    BATCH_EPISODE_SUCCESSES,
    BATCH_IMAGE,
    BATCH_KEYS,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_SUCCESSES,
    SCHEMA_VERSION,
    EpisodeMeta,
)
from robocds.datasets.storage import tar_bytes, write_bytes_atomic
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.seeds import data_episode_seed, oracle_seed
from robocds.envs.suite import PROPRIO_DIM, TASK_NAMES

IMAGE_SIZE = 16  # the smallest frame the suite allows: decoding cost is negligible
TASKS = ("lift-cube", "place-cube-blue")  # the loaded tasks, in batch-row order
# Solved in another reward column only: a loader that read the wrong columns would pick it up.
UNLOADED = "lift-cylinder"


@dataclass(frozen=True)
class Spec:
    """One hand-made episode: its task, index, length and the steps t at which each task is solved in s_{t+1}."""

    uid: int  # unique over the dataset: encoded in every frame and proprio vector
    task: str
    episode: int
    length: int
    solved: dict[str, tuple[int, ...]]  # task name -> steps t whose transition solves it (reward 1, success)

    @property
    def success(self) -> bool:
        """The own task is solved at the last step: the episode terminated (else it was truncated)."""
        return self.length - 1 in self.solved.get(self.task, ())


SPECS = (
    # Terminates on its own success at the last step; an unloaded task is solved on the way.
    Spec(0, "lift-cube", 0, 6, {"lift-cube": (5,), UNLOADED: (1,)}),
    # Truncated; solves the other loaded task once, mid-episode (a success without termination).
    Spec(1, "lift-cube", 1, 5, {"place-cube-blue": (2,)}),
    # Terminates; the other loaded task stays solved over the last three steps.
    Spec(2, "place-cube-blue", 0, 4, {"place-cube-blue": (3,), "lift-cube": (1, 2, 3)}),
    # Truncated, solves nothing: every episode_successes entry is 0.
    Spec(3, "place-cube-blue", 1, 3, {}),
)


def frame(uid: int, step: int) -> np.ndarray:
    """uint8 [S, S, 3]: red = step, green = episode uid, blue = a pattern that fixes the orientation."""
    pixels = np.arange(IMAGE_SIZE * IMAGE_SIZE).reshape(IMAGE_SIZE, IMAGE_SIZE)
    out = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    out[..., 0] = 10 + 20 * step
    out[..., 1] = 10 + 30 * uid
    out[..., 2] = pixels % 256  # row-major position: a transposed or flipped frame differs
    return out


def proprio(uid: int, step: int) -> np.ndarray:
    """float32 [P]: entry p is 100 * uid + step + p / 10."""
    return (100.0 * uid + step + np.arange(PROPRIO_DIM) / 10.0).astype(np.float32)


def decode_ids(image: torch.Tensor) -> tuple[int, int]:
    """(uid, step) of a [3, S, S] frame from ``frame``."""
    step, rest = divmod(int(image[0, 0, 0]) - 10, 20)
    uid, rest2 = divmod(int(image[1, 0, 0]) - 10, 30)
    assert rest == rest2 == 0, f"not a frame of this test: red {int(image[0, 0, 0])}, green {int(image[1, 0, 0])}"
    return uid, step


def make_episode(spec: Spec) -> Episode:
    """The ``Episode`` of ``spec``, with a reward column for every task of the suite (``TASK_NAMES``)."""
    length = spec.length
    rewards = np.zeros((length, len(TASK_NAMES)), dtype=np.float32)
    for name, steps in spec.solved.items():
        rewards[list(steps), TASK_NAMES.index(name)] = 1.0
    terminated = np.zeros(length, dtype=bool)
    truncated = np.zeros(length, dtype=bool)
    (terminated if spec.success else truncated)[-1] = True
    own = TASK_NAMES.index(spec.task)
    meta = EpisodeMeta(
        schema_version=SCHEMA_VERSION,
        task=spec.task,
        episode=spec.episode,
        seed=data_episode_seed(0, own, spec.episode),  # what the recipe's base seed 0 gives: loaders check it
        oracle_seed=oracle_seed(data_episode_seed(0, own, spec.episode)),
        random_action_prob=0.0,
        position_std=0.0,
        length=length,
        success=spec.success,
        episode_return=float(rewards[:, own].sum()),
        image_size=IMAGE_SIZE,
        reward_tasks=TASK_NAMES,
    )
    return Episode(
        frames=np.stack([frame(spec.uid, t) for t in range(length + 1)]),
        proprio=np.stack([proprio(spec.uid, t) for t in range(length + 1)]),
        actions=np.arange(length, dtype=np.int64) % NUM_ACTIONS,
        task_rewards=rewards,
        task_successes=rewards > 0,
        terminated=terminated,
        truncated=truncated,
        meta=meta,
    )


def write_dataset(root: Path) -> None:
    """The specs as a dataset, one episode a shard, written as ``generate`` writes (only recording replaced).

    ``generate_shard``'s steps for every planned shard (encode, tar, atomic write, record), then the manifest
    from the shard records, as ``generate`` does once every shard exists.
    """
    recipe = Recipe(
        name="alignment",
        tasks=tuple(TaskRecipe(task, sum(s.task == task for s in SPECS)) for task in TASKS),
        image_size=IMAGE_SIZE,
        max_steps=max(s.length for s in SPECS),
        episodes_per_shard=1,
    )
    by_key = {(s.task, s.episode): s for s in SPECS}
    for job in plan_shards(recipe):
        (root / job.task).mkdir(parents=True, exist_ok=True)
        episodes = [
            make_episode(by_key[job.task, i]) for i in range(job.first_episode, job.first_episode + job.episodes)
        ]
        data = tar_bytes(encode_episode(e) for e in episodes)
        write_bytes_atomic(str(root), job.relpath, data)
        write_shard_record(str(root), summarise_shard(job.relpath, data, [e.meta for e in episodes]))
    write_manifest(str(root), recipe)


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alignment") / "data"
    write_dataset(root)
    return root


def check_batch_alignment(
    batch: dict[str, torch.Tensor], allowed: dict[str, set[int]], n_step: int = 1
) -> set[tuple[int, int]]:
    """Assert every transition of a [T, B, ...] batch against the specs; returns the (uid, step) pairs seen.

    ``allowed``: task name -> the episode indices its row may draw from (the training or held-out split);
    ``n_step``: the loader's, so the next frame is ``min(n_step, length - step)`` steps on.
    """
    specs = {s.uid: s for s in SPECS}
    assert set(BATCH_KEYS) <= set(batch)
    t, b = batch[BATCH_ACTION].shape
    assert t == len(TASKS)
    seen = set()
    for row, task in enumerate(TASKS):
        for i in range(b):
            uid, step = decode_ids(batch[BATCH_IMAGE][row, i])
            spec = specs[uid]
            where = f"row {row} ({task}), transition {i}: episode {spec.task}#{spec.episode}, step {step}"
            assert spec.task == task and spec.episode in allowed[task], where
            assert 0 <= step < spec.length, where  # never the last frame as an observation
            assert torch.equal(batch[BATCH_IMAGE][row, i], torch.from_numpy(frame(uid, step)).permute(2, 0, 1)), where
            ahead = min(n_step, spec.length - step)
            assert float(batch[BATCH_BOOTSTRAP_STEPS][row, i]) == ahead, where
            assert torch.equal(
                batch[BATCH_NEXT_IMAGE][row, i], torch.from_numpy(frame(uid, step + ahead)).permute(2, 0, 1)
            ), where
            assert torch.equal(batch[BATCH_PROPRIO][row, i], torch.from_numpy(proprio(uid, step))), where
            assert torch.equal(batch[BATCH_NEXT_PROPRIO][row, i], torch.from_numpy(proprio(uid, step + ahead))), where
            assert int(batch[BATCH_ACTION][row, i]) == step % NUM_ACTIONS, where
            # Column k is task TASKS[k]: solved on this very transition (reward and terminal for k) ...
            solved_now = [float(step in spec.solved.get(name, ())) for name in TASKS]
            assert batch[BATCH_REWARDS][row, i].tolist() == solved_now, where
            assert batch[BATCH_SUCCESSES][row, i].tolist() == solved_now, where
            # ... and the episode solves k at some step, whichever of its steps was drawn.
            episode_solves = [float(bool(spec.solved.get(name))) for name in TASKS]
            assert batch[BATCH_EPISODE_SUCCESSES][row, i].tolist() == episode_solves, where
            # Steps after t until k is first solved (0: on this transition), inf when never again.
            to_success = [
                min((s - step for s in spec.solved.get(name, ()) if s >= step), default=np.inf) for name in TASKS
            ]
            assert batch[BATCH_STEPS_TO_SUCCESS][row, i].tolist() == to_success, where
            seen.add((uid, step))
    return seen


def every_transition(allowed: dict[str, set[int]]) -> set[tuple[int, int]]:
    return {(s.uid, t) for s in SPECS if s.episode in allowed[s.task] for t in range(s.length)}


@pytest.mark.parametrize("n_step", [1, 3])  # 3: the target frame three steps on, fewer in an episode's last steps
@pytest.mark.parametrize("loader", ["memory", "streaming"])
def test_every_training_transition_is_aligned(aligned_root: Path, loader: str, n_step: int) -> None:
    data = OfflineDataModule(
        str(aligned_root),
        batch_size=32,
        loader=loader,
        seed=0,
        steps_per_epoch=6,
        val_batches=0,  # every episode trains
        shuffle_buffer=8,
        n_step=n_step,
    )
    assert data.task_names == list(TASKS)
    data.setup("fit")
    allowed = {task: {s.episode for s in SPECS if s.task == task} for task in TASKS}
    seen: set[tuple[int, int]] = set()
    for batch in data.train_dataloader():
        assert batch[BATCH_IMAGE].shape == (len(TASKS), 32, 3, IMAGE_SIZE, IMAGE_SIZE)
        seen |= check_batch_alignment(batch, allowed, n_step)
    # 6 x 32 draws per task over at most 11 transitions (seeded): every one of them was checked at least once.
    assert seen == every_transition(allowed)


@pytest.mark.parametrize("loader", ["memory", "streaming"])
def test_held_out_episodes_stay_aligned_and_out_of_training(aligned_root: Path, loader: str) -> None:
    # val_fraction 0.5 of 2 episodes holds out episode 1 of each task (split_episodes).
    data = OfflineDataModule(
        str(aligned_root),
        batch_size=16,
        loader=loader,
        seed=0,
        steps_per_epoch=4,
        val_fraction=0.5,
        val_batches=2,
        val_batch_size=32,
        shuffle_buffer=8,
    )
    data.setup("fit")
    train, held = {task: {0} for task in TASKS}, {task: {1} for task in TASKS}
    seen: set[tuple[int, int]] = set()
    for batch in data.train_dataloader():
        seen |= check_batch_alignment(batch, train)
    assert seen == every_transition(train)
    seen = set()
    for batch in data.val_dataloader():
        seen |= check_batch_alignment(batch, held)
    assert seen == every_transition(held)
