"""Streaming loader for datasets that do not fit in memory: one ``wds.DataPipeline`` per task, zipped.

Each task's pipeline reads its own shard set, so every batch has exactly ``batch_size`` transitions
of every task whatever the tasks' sizes (a data-poor task simply cycles through its few shards more
often). The batches have the format of ``robocds.datasets.schema``, like the in-memory path.

Reproducibility: shard order and shuffle buffers are seeded from (seed, task, rank, worker, epoch),
so a run is repeatable for a given number of DataLoader workers and processes. A resumed run
(``skip`` batches into an epoch) replays each worker's stream and drops the batches already
trained on, so it continues with the very batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds

from robocds.datasets.episode import check_n_step, decode_episode, decode_meta
from robocds.datasets.manifest import check_provenance, check_shard, manifest_recipe, read_manifest, read_shard
from robocds.datasets.recipe import Recipe
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
    MANIFEST_FILE,
    Manifest,
    ShardEntry,
    episode_from_key,
)
from robocds.datasets.storage import iter_tar_samples, join
from robocds.envs.seeds import hash_seed

# A transition inside the pipeline: views into its episode's arrays, no copies until collation.
# (frame [3,S,S], target_frame (n_step on), proprio [P], target_proprio [P], action (), rewards [T], successes [T],
#  episode_successes [T], steps_to_success [T], bootstrap_steps ())
Transition = tuple[np.ndarray, ...]


class _ReadShards:
    """Pipeline stage: shard URLs -> raw samples. Each shard is read whole, hashed as its bytes stream in,
    and checked against its manifest entry (size, sha256) before any of its samples moves on, so a shard
    whose bytes changed fails naming the shard at once and none of its transitions reaches a batch."""

    def __init__(
        self, entries: dict[str, ShardEntry], task: str, image_size: int, check_hash: bool, recipe: Recipe
    ) -> None:
        self.entries, self.task, self.image_size, self.check_hash = entries, task, image_size, check_hash
        self.recipe = recipe

    def __call__(self, sources: Iterator[dict]) -> Iterator[dict]:
        for source in sources:
            url = source["url"]
            data = read_shard(url, self.entries[url], self.task, self.image_size, self.check_hash)
            samples = list(iter_tar_samples(data, url))
            # Before any sample moves on, as the memory loader checks them: the manifest's counts, and that every
            # episode is the one this dataset's recipe generates (a shard copied in from elsewhere is not).
            metas = [decode_meta(sample, url) for sample in samples]
            for meta in metas:
                check_provenance(url, meta, self.recipe)
            check_shard(url, metas, self.entries[url])
            yield from samples


class _KeepEpisodes:
    """Pipeline stage predicate: keep the raw samples whose episode index is in ``wanted`` (None: all)."""

    def __init__(self, wanted: Sequence[int] | None) -> None:
        self.wanted = None if wanted is None else frozenset(wanted)

    def __call__(self, sample: dict) -> bool:
        return self.wanted is None or episode_from_key(sample.get("__key__", "")) in self.wanted


class _Decode:
    """Pipeline stage: raw sample -> validated ``Episode`` (names shard, key and field on error)."""

    def __init__(self, task: str, image_size: int, proprio_dim: int) -> None:
        self.task, self.image_size, self.proprio_dim = task, image_size, proprio_dim

    def __call__(self, sample: dict):
        return decode_episode(sample, None, self.task, self.image_size, self.proprio_dim)


class _Explode:
    """Pipeline stage: episodes -> transitions, keeping only the selected tasks' reward columns; each
    transition's target frame is ``n_step`` frames on (fewer at the episode's end)."""

    def __init__(self, columns: list[int], n_step: int = 1) -> None:
        self.columns = columns
        self.n_step = n_step

    def __call__(self, episodes: Iterator) -> Iterator[Transition]:
        for episode in episodes:
            # Transpose the whole episode once: batches then need no layout change.
            frames = np.ascontiguousarray(episode.frames.transpose(0, 3, 1, 2))
            rewards = episode.task_rewards[:, self.columns]
            successes = episode.task_successes[:, self.columns].astype(np.float32)
            episode_successes = episode.returns_positive(self.columns)  # one row for every transition
            steps_to_success = episode.steps_to_success(self.columns)
            ahead = episode.bootstrap_steps(self.n_step)
            for t in range(episode.length):
                yield (
                    frames[t],
                    frames[t + ahead[t]],
                    episode.proprio[t],
                    episode.proprio[t + ahead[t]],
                    episode.actions[t],
                    rewards[t],
                    successes[t],
                    episode_successes,
                    steps_to_success[t],
                    np.float32(ahead[t]),
                )


class _SplitByRole:
    """Pipeline stage: every ``count``-th shard from ``role`` on (``wds.split_by_worker`` with an explicit worker)."""

    def __init__(self, role: int, count: int) -> None:
        self.role, self.count = role, count

    def __call__(self, shards: Iterable) -> Iterator:
        return itertools.islice(shards, self.role, None, self.count)


class _WorkerSeed:
    """``ResampledShards`` worker seed of the role played (WebDataset's default reads the DataLoader worker id)."""

    def __init__(self, rank: int, role: int) -> None:
        self.value = rank * 1000 + role  # the value of webdataset's pytorch_worker_seed for that worker

    def __call__(self) -> int:
        return self.value


def _collate(transitions: list[Transition]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack(column) for column in zip(*transitions))


class StreamingMultiTaskDataset(torch.utils.data.IterableDataset):
    """Batches ([T, B, ...], schema format) streamed from the shards; ``steps`` batches per epoch in all.

    Per task, an explicit ``wds.DataPipeline``:

    - shards: ``ResampledShards`` (``resampled=True``: each worker draws shards with replacement,
      an epoch is set by ``with_epoch``), or the fixed list shuffled per epoch, split by node and
      by worker and repeated (``resampled=False``; needs >= nodes x workers shards per task);
    - read each shard whole, hashing its bytes as they stream in, and check size and sha256 against the
      manifest (``verify=False``: size only) before its samples move on; errors name the shard;
    - decode + validate each episode; drop the held-out (validation) episodes;
    - episodes -> transitions (each with the frame ``n_step`` steps on, fewer at an episode's end, as its
      target's); a shuffle buffer of ``shuffle_buffer`` transitions;
    - ``batched(batch_size)``.

    The T per-task pipelines are zipped and stacked into one multi-task batch.

    The DataLoader takes batch i of an epoch from worker i % W. With ``skip`` = k set before an
    iteration (a run resumed k batches into the epoch), worker w plays the role of worker
    (w + k) % W of the uninterrupted epoch (its seeds and shards) and drops that role's batches
    before k, so the epoch goes on with batch k, k + 1, ... as if never interrupted.
    """

    def __init__(
        self,
        root: str,
        batch_size: int,
        steps: int,
        tasks: Sequence[str] | None = None,
        train_episodes: dict[str, Sequence[int]] | None = None,
        shuffle_buffer: int = 2000,
        resampled: bool = True,
        seed: int = 0,
        manifest: Manifest | None = None,
        verify: bool = True,
        n_step: int = 1,
    ) -> None:
        super().__init__()
        check_n_step(n_step)  # here, not first inside a DataLoader worker
        self.root = root
        self.manifest = manifest or read_manifest(root)
        self.task_names = tuple(tasks) if tasks is not None else self.manifest.task_names
        self.batch_size = batch_size
        self.steps = steps
        self.train_episodes = train_episodes
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.seed = seed
        self.verify = verify
        self.n_step = n_step
        self.epoch = 0
        self.skip = 0
        self.recipe = manifest_recipe(self.manifest, join(root, MANIFEST_FILE))
        self.columns = [list(self.manifest.reward_tasks).index(name) for name in self.task_names]
        for name in self.task_names:
            self.manifest.task(name)  # unknown task: clear error now, not inside a worker

    def __len__(self) -> int:
        return self.steps

    def _task_pipeline(self, task: str, seed: int, rank: int, world: int, worker: int, workers: int):
        """One task's pipeline as DataLoader worker ``worker`` of ``workers`` would run it (seeds and shards)."""
        entry = self.manifest.task(task)
        entries = {join(self.root, shard.path): shard for shard in entry.shards}
        urls = list(entries)
        if self.resampled:
            # With replacement, per worker.
            shards = [wds.ResampledShards(urls, seed=seed, worker_seed=_WorkerSeed(rank, worker), deterministic=True)]
        else:
            if len(urls) < world * workers:
                raise ValueError(
                    f"resampled=False: task {task} has {len(urls)} shard(s), fewer than "
                    f"{world} process(es) x {workers} worker(s); use resampled=True or fewer workers"
                )
            shards = [
                wds.SimpleShardList(urls),
                wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed),  # shard shuffle, new each epoch
                wds.split_by_node,  # each process its own shards
                _SplitByRole(worker, workers),  # each DataLoader worker its own shards
            ]
        wanted = self.train_episodes[task] if self.train_episodes is not None else None
        pipeline = wds.DataPipeline(
            *shards,
            self._shard_reader(entries, task),  # shard -> raw samples, size and sha256 checked as it streams in
            wds.select(_KeepEpisodes(wanted)),  # hold out the validation episodes (by key, before decoding)
            wds.map(_Decode(task, self.manifest.image_size, self.manifest.proprio_dim)),  # validate + decode
            _Explode(self.columns, self.n_step),  # episode -> transitions (views, no copies)
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer // 2, rng=random.Random(seed + 1)),
            wds.batched(self.batch_size, collation_fn=_collate, partial=False),  # B transitions of this task
        )
        # The fixed shard list ends after one pass: repeat it (a new shard order each pass) forever.
        return pipeline if self.resampled else pipeline.repeat(nepochs=2**62)

    def _shard_reader(self, entries: dict[str, ShardEntry], task: str):
        """The pipeline stage that turns shard URLs into raw samples (a benchmark swaps it for WebDataset's)."""
        return _ReadShards(entries, task, self.manifest.image_size, self.verify, self.recipe)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world()
        epoch = self.epoch
        self.epoch += 1
        skip = min(self.skip, self.steps)
        role = (worker + skip) % workers  # the worker of the uninterrupted epoch whose batch comes next here
        pipelines = [
            self._task_pipeline(
                task,
                seed=hash_seed(self.seed, t, rank, role, epoch),
                rank=rank,
                world=world,
                worker=role,
                workers=workers,
            )
            for t, task in enumerate(self.task_names)
        ]
        # The role's share of the epoch: batches role, role + W, ... (the DataLoader interleaves the workers);
        # the ones before `skip` were trained on before the run was resumed.
        share, done = len(range(role, self.steps, workers)), len(range(role, skip, workers))
        combined = wds.DataPipeline(
            lambda: itertools.islice(zip(*pipelines), done, share),  # one batch of every task at a time
            wds.map(_stack_tasks),  # T per-task batches -> one [T, B, ...] batch
        )
        return iter(combined)


def _stack_tasks(per_task: tuple[tuple[np.ndarray, ...], ...]) -> dict[str, torch.Tensor]:
    columns = [np.stack(column) for column in zip(*per_task)]  # each [T, B, ...]
    (
        image,
        next_image,
        proprio,
        next_proprio,
        action,
        rewards,
        successes,
        episode_successes,
        steps_to_success,
        bootstrap_steps,
    ) = (torch.from_numpy(c) for c in columns)
    return {
        BATCH_IMAGE: image,
        BATCH_NEXT_IMAGE: next_image,
        BATCH_PROPRIO: proprio,
        BATCH_NEXT_PROPRIO: next_proprio,
        BATCH_ACTION: action.to(torch.int64),
        BATCH_REWARDS: rewards,
        BATCH_SUCCESSES: successes,
        BATCH_EPISODE_SUCCESSES: episode_successes,
        BATCH_STEPS_TO_SUCCESS: steps_to_success,
        BATCH_BOOTSTRAP_STEPS: bootstrap_steps,
    }


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
