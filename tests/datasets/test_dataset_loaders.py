"""Loaders: the in-memory replay and the streaming pipeline yield the schema's batches; the DataModule."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from robocds.datasets.datamodule import OfflineDataModule
from robocds.datasets.manifest import read_manifest
from robocds.datasets.replay import ReplaySampler, load_replay, load_task_episodes, split_episodes
from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_EPISODE_SUCCESSES,
    BATCH_IMAGE,
    BATCH_KEYS,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_SUCCESSES,
)
from robocds.datasets.streaming import StreamingMultiTaskDataset
from robocds.envs.env import PROPRIO_DIM
from robocds.envs.tasks import task_index
from robocds.errors import ConfigError


def check_batch_format(batch: dict, num_tasks: int, batch_size: int, image_size: int = 32) -> None:
    """The training-batch contract of robocds.datasets.schema, key by key."""
    assert set(batch) == set(BATCH_KEYS)
    t, b, s = num_tasks, batch_size, image_size
    expected = {
        BATCH_IMAGE: (torch.uint8, (t, b, 3, s, s)),
        BATCH_NEXT_IMAGE: (torch.uint8, (t, b, 3, s, s)),
        BATCH_PROPRIO: (torch.float32, (t, b, PROPRIO_DIM)),
        BATCH_NEXT_PROPRIO: (torch.float32, (t, b, PROPRIO_DIM)),
        BATCH_ACTION: (torch.int64, (t, b)),
        BATCH_REWARDS: (torch.float32, (t, b, t)),
        BATCH_SUCCESSES: (torch.float32, (t, b, t)),
        BATCH_EPISODE_SUCCESSES: (torch.float32, (t, b, t)),
        BATCH_STEPS_TO_SUCCESS: (torch.float32, (t, b, t)),
    }
    for key, (dtype, shape) in expected.items():
        assert batch[key].dtype == dtype and tuple(batch[key].shape) == shape, key


def transition_table(root, tasks):
    """Every transition of the given tasks, keyed by (task, image bytes, proprio bytes) -> what a batch must hold."""
    manifest = read_manifest(str(root))
    columns = [task_index(name) for name in tasks]
    table = {}
    for name in tasks:
        for episode in load_task_episodes(str(root), manifest, name):
            # Computed here from the raw rewards, not with the loaders' helper: the episode's return for each task.
            episode_successes = (episode.task_rewards[:, columns].sum(axis=0) > 0).astype(np.float32)
            solved = episode.task_successes[:, columns]
            for t in range(episode.length):
                # Steps from t to the first later step that solves each task (inf: none), by direct search.
                later = [np.flatnonzero(solved[t:, k]) for k in range(len(columns))]
                steps = np.array([float(f[0]) if f.size else np.inf for f in later], dtype=np.float32)
                image = np.ascontiguousarray(episode.frames[t].transpose(2, 0, 1))
                table[(name, image.tobytes(), episode.proprio[t].tobytes())] = (
                    episode.frames[t + 1].transpose(2, 0, 1),
                    episode.proprio[t + 1],
                    int(episode.actions[t]),
                    episode.task_rewards[t, columns],
                    episode.task_successes[t, columns].astype(np.float32),
                    episode.meta.episode,
                    episode_successes,
                    steps,
                )
    return table


def check_batch_content(batch: dict, tasks: list[str], table: dict, allowed: dict[str, range] | None = None) -> None:
    """Row t of the batch holds real transitions of task t, with the rewards of ``tasks`` in that order."""
    for t, name in enumerate(tasks):
        for b in range(batch[BATCH_ACTION].shape[1]):
            key = (name, batch[BATCH_IMAGE][t, b].numpy().tobytes(), batch[BATCH_PROPRIO][t, b].numpy().tobytes())
            assert key in table, f"row {t} holds a transition that is not task {name}'s"
            next_image, next_proprio, action, rewards, successes, episode, episode_successes, steps = table[key]
            assert np.array_equal(batch[BATCH_NEXT_IMAGE][t, b].numpy(), next_image)
            assert np.array_equal(batch[BATCH_NEXT_PROPRIO][t, b].numpy(), next_proprio)
            assert int(batch[BATCH_ACTION][t, b]) == action
            assert np.array_equal(batch[BATCH_REWARDS][t, b].numpy(), rewards)
            assert np.array_equal(batch[BATCH_SUCCESSES][t, b].numpy(), successes)
            assert np.array_equal(batch[BATCH_EPISODE_SUCCESSES][t, b].numpy(), episode_successes)
            assert np.array_equal(batch[BATCH_STEPS_TO_SUCCESS][t, b].numpy(), steps)
            if allowed is not None:
                assert episode in allowed[name], f"{name} episode {episode} should be held out"


def test_memory_replay_batches(tiny_root):
    replay = load_replay(str(tiny_root))
    manifest = read_manifest(str(tiny_root))
    assert replay.num_transitions == sum(task.transitions for task in manifest.tasks)
    tasks = list(manifest.task_names)
    batch = replay.sample(16, torch.Generator().manual_seed(0))
    check_batch_format(batch, len(tasks), 16)
    check_batch_content(batch, tasks, transition_table(tiny_root, tasks))
    # Frames are stored once: the next image of a transition is the following frame of its episode.
    obs = replay.obs_index[replay.task_start[0]]
    assert torch.equal(replay.gather(replay.task_start[:1, None])[BATCH_NEXT_IMAGE][0, 0], replay.frames[obs + 1])


@pytest.mark.parametrize("loader", ["memory", "streaming"])
def test_episode_successes_mark_every_transition_of_an_episode_that_succeeds(tiny_root, loader):
    """In `tiny`, place-cube-blue's episodes lift the cube (a lift-cube success) without placing it, and only
    lift-cylinder's episode 2 lifts the cylinder: every transition of those episodes carries the mark."""
    tasks = ["lift-cube", "lift-cylinder", "place-cube-blue"]
    if loader == "memory":
        batch = load_replay(str(tiny_root), tasks=tasks).sample(64, torch.Generator().manual_seed(0))
    else:
        batch = next(iter(StreamingMultiTaskDataset(str(tiny_root), batch_size=20, steps=1, tasks=tasks)))
    check_batch_content(batch, tasks, transition_table(tiny_root, tasks))
    marks = batch[BATCH_EPISODE_SUCCESSES]
    # Every transition of place-cube-blue (row 2) succeeds for lift-cube, also the steps before the lift.
    assert (marks[2, :, 0] == 1).all() and (batch[BATCH_REWARDS][2, :, 0] == 0).any()
    assert (marks[:, :, 2] == 0).all()  # no episode places the cube in 12 steps
    assert (marks[0, :, 1] == 0).all() and (marks[0, :, 0] == 1).all()  # lift-cube's own episodes all succeed
    if loader == "memory":  # 64 draws among lift-cylinder's 34 transitions: both kinds of episode appear
        assert set(marks[1, :, 1].tolist()) == {0.0, 1.0}


def test_memory_sampling_is_uniform_and_seeded(tiny_root):
    replay = load_replay(str(tiny_root))
    a = replay.sample(64, torch.Generator().manual_seed(1))
    b = replay.sample(64, torch.Generator().manual_seed(1))
    assert all(torch.equal(a[k], b[k]) for k in BATCH_KEYS)
    index = replay.sample_indices(6000, torch.Generator().manual_seed(2))
    for t in range(replay.num_tasks):
        # Row t draws only task t's transitions, each about equally often.
        start, count = int(replay.task_start[t]), int(replay.task_count[t])
        counts = torch.bincount(index[t] - start, minlength=count)
        assert len(counts) == count and counts.sum() == 6000
        assert counts.min() > 0.6 * counts.float().mean() and counts.max() < 1.4 * counts.float().mean()


def test_task_selection_reorders_rows_and_reward_columns(tiny_root):
    tasks = ["place-cube-blue", "lift-cube"]
    replay = load_replay(str(tiny_root), tasks=tasks)
    batch = replay.sample(8, torch.Generator().manual_seed(0))
    check_batch_format(batch, 2, 8)
    check_batch_content(batch, tasks, transition_table(tiny_root, tasks))


def test_replay_sampler_epochs(tiny_root):
    replay = load_replay(str(tiny_root))
    sampler = ReplaySampler(replay, batch_size=4, steps=3, seed=5)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 3
    assert not torch.equal(first[0][BATCH_IMAGE], second[0][BATCH_IMAGE])  # a new stream every epoch
    sampler.epoch = 0
    assert torch.equal(list(sampler)[0][BATCH_IMAGE], first[0][BATCH_IMAGE])  # ... determined by (seed, epoch)


@pytest.mark.parametrize("resampled", [True, False])
def test_streaming_batches(tiny_root, resampled):
    tasks = ["lift-cube", "lift-cylinder", "place-cube-blue"]
    stream = StreamingMultiTaskDataset(
        str(tiny_root), batch_size=6, steps=5, tasks=tasks, shuffle_buffer=50, resampled=resampled
    )
    batches = list(stream)
    assert len(batches) == 5
    table = transition_table(tiny_root, tasks)
    for batch in batches:
        check_batch_format(batch, 3, 6)
        check_batch_content(batch, tasks, table)


def test_streaming_with_dataloader_workers_and_holdout(tiny_root):
    tasks = ["lift-cube", "lift-cylinder"]
    manifest = read_manifest(str(tiny_root))
    train = {name: split_episodes(manifest.task(name).episodes, 0.34)[0] for name in tasks}
    stream = StreamingMultiTaskDataset(
        str(tiny_root), batch_size=4, steps=7, tasks=tasks, train_episodes=train, shuffle_buffer=20
    )
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches = list(loader)
    assert len(batches) == 7  # the workers split the epoch's batches between them
    table = transition_table(tiny_root, tasks)
    for batch in batches:
        check_batch_content(batch, tasks, table, allowed=train)


def test_streaming_without_resampling_needs_enough_shards(tiny_root):
    dm = OfflineDataModule(str(tiny_root), batch_size=2, loader="streaming", resampled=False, num_workers=2)
    dm.setup("fit")
    with pytest.raises(ValueError, match="place-cube-blue has 1 shard"):
        dm.train_dataloader()


def test_streaming_without_resampling_refuses_a_task_smaller_than_a_batch(tiny_root, tmp_path):
    """place-cube-blue holds 2 episodes (24 transitions), one held out: fewer training transitions than 16. A
    non-resampled stream never yields a whole batch of it, and the fit used to spin for ever."""
    manifest = read_manifest(str(tiny_root))
    dm = OfflineDataModule(str(tiny_root), batch_size=16, loader="streaming", resampled=False, val_batches=1)
    dm.setup("fit")
    held = split_episodes(manifest.task("place-cube-blue").episodes, 0.1)[1]
    lengths = [e.length for e in load_task_episodes(str(tiny_root), manifest, "place-cube-blue", held)]
    training = manifest.task("place-cube-blue").transitions - sum(lengths)
    assert training < 16 <= manifest.task("place-cube-blue").transitions
    with pytest.raises(ConfigError, match=rf"task place-cube-blue has {training} training transition\(s\), fewer "):
        dm.train_dataloader()
    # Through the command: one line on stderr, exit 2, within seconds (no spinning, no Lightning start-up lines).
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).parent / "robocds"), "fit", "--config", "base", "--config", "cds", "--config",
               "smoke", "--data.root", str(tiny_root), "--data.loader", "streaming", "--data.resampled", "false",
               "--runs_dir", str(tmp_path / "runs")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("robocds: error: resampled=False: task place-cube-blue has ")


def test_datamodule_reads_only_the_manifest_until_setup(tiny_root, tmp_path):
    root = shutil.copytree(tiny_root, tmp_path / "data")
    for shard in root.glob("*/shard-*.tar"):
        shard.unlink()  # construction must not touch the shards
    dm = OfflineDataModule(str(root), batch_size=4, tasks=["lift-cylinder", "lift-cube"])
    assert dm.num_tasks == 2
    assert dm.task_names == ["lift-cylinder", "lift-cube"]
    assert (dm.image_size, dm.proprio_dim, dm.num_actions) == (32, PROPRIO_DIM, 8)
    assert dm.obs_shape == (3, 32, 32)


@pytest.mark.parametrize("loader", ["memory", "streaming"])
def test_datamodule_train_and_val(tiny_root, loader):
    dm = OfflineDataModule(
        str(tiny_root),
        batch_size=4,
        loader=loader,
        steps_per_epoch=3,
        val_batches=2,
        val_fraction=0.3,
        shuffle_buffer=20,
    )
    dm.setup("fit")
    tasks = dm.task_names
    table = transition_table(tiny_root, tasks)
    manifest = read_manifest(str(tiny_root))
    splits = {name: split_episodes(manifest.task(name).episodes, 0.3) for name in tasks}
    train = list(dm.train_dataloader())
    assert len(train) == 3
    for batch in train:
        check_batch_format(batch, dm.num_tasks, 4)
        check_batch_content(batch, tasks, table, allowed={name: split[0] for name, split in splits.items()})
    val, val_again = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(val) == 2
    for batch, again in zip(val, val_again):
        assert all(torch.equal(batch[k], again[k]) for k in BATCH_KEYS)  # the same batches every validation
        check_batch_content(batch, tasks, table, allowed={name: split[1] for name, split in splits.items()})


@pytest.mark.parametrize("loader", ["memory", "streaming"])
def test_each_run_seed_draws_its_own_batch_stream(tiny_root, monkeypatch, loader):
    """data.seed defaults to the run's seed_everything: different training seeds see different data."""

    def first_images(run_seed: int, **kwargs) -> torch.Tensor:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(run_seed))  # what seed_everything(run_seed) records
        dm = OfflineDataModule(str(tiny_root), batch_size=4, steps_per_epoch=1, loader=loader, **kwargs)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[BATCH_IMAGE]

    assert torch.equal(first_images(1), first_images(1))
    assert not torch.equal(first_images(1), first_images(2))
    assert torch.equal(first_images(1, seed=7), first_images(2, seed=7))  # an explicit data.seed wins


def test_datamodule_settings_are_checked(tiny_root):
    for kwargs, words in [
        ({"loader": "disk"}, "loader='disk'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"n_step": 0}, "n_step=0"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
        ({"device": "gpu7"}, "device='gpu7'"),
        ({"val_fraction": 0.9}, "val_fraction=0.9"),  # would hold out every episode of a small task
    ]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[")):
            OfflineDataModule(str(tiny_root), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_replay_on_the_gpu(tiny_root):
    dm = OfflineDataModule(str(tiny_root), batch_size=8, device="cuda", steps_per_epoch=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert all(v.is_cuda for v in batch.values())
    check_batch_format(batch, dm.num_tasks, 8)


class _TinyModel(pl.LightningModule):
    """A stand-in learner: sizes itself from the data module (as the CLI links them) and fits a Q head."""

    def __init__(self, num_tasks: int, num_actions: int, image_size: int, proprio_dim: int, task_names: list[str]):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * image_size * image_size, num_tasks * num_actions)
        )

    def _loss(self, batch):
        t, b = batch[BATCH_ACTION].shape
        q = self.net(batch[BATCH_IMAGE].flatten(0, 1).float() / 255).view(t, b, t, -1)
        own = q[torch.arange(t), :, torch.arange(t)]  # [T, B, A]: task t's head on task t's rows
        chosen = own.gather(-1, batch[BATCH_ACTION][..., None]).squeeze(-1)
        rewards = batch[BATCH_REWARDS][torch.arange(t), :, torch.arange(t)]
        return torch.nn.functional.mse_loss(chosen, rewards)

    def training_step(self, batch, _):
        return self._loss(batch)

    def validation_step(self, batch, _):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_lightning_cli_links_the_data_shapes_into_the_model(tiny_root, tmp_path):
    from lightning.pytorch.cli import LightningCLI

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            for key in ("num_tasks", "num_actions", "image_size", "proprio_dim", "task_names"):
                parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    cli = CLI(
        _TinyModel,
        OfflineDataModule,
        run=False,
        args=[
            f"--data.root={tiny_root}",
            "--data.batch_size=4",
            "--data.steps_per_epoch=3",
            "--data.val_batches=2",
            "--data.tasks=[lift-cube, place-cube-blue]",
            "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger=false",
        ],
    )
    assert cli.model.hparams.num_tasks == 2 and cli.model.hparams.task_names == ["lift-cube", "place-cube-blue"]
    assert cli.model.hparams.image_size == 32 and cli.model.hparams.num_actions == 8
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 6
    (result,) = cli.trainer.validate(cli.model, cli.datamodule)
    assert np.isfinite(result["val/loss"])


FORK_SCRIPT = """
import sys, numpy as np, cv2, torch
from robocds.datasets.streaming import StreamingMultiTaskDataset
import time
cv2.cvtColor(np.zeros((1500, 1500, 3), np.uint8), cv2.COLOR_RGB2BGR)  # OpenCV's thread pool now exists,
time.sleep(1)  # and its threads are asleep on a condition variable that a forked child inherits half-held
stream = StreamingMultiTaskDataset(sys.argv[1], batch_size=4, steps=3, shuffle_buffer=20)
print(len(list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1))))
"""


def test_forked_loader_workers_do_not_deadlock_on_opencv(tiny_root):
    """Regression: OpenCV calls that touch its thread pool (cv2.setNumThreads, cvtColor on large images)
    deadlock in a forked DataLoader worker once the parent has used the pool; the data path makes none."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(tiny_root)], capture_output=True, timeout=120, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "3"


def test_no_validation_means_no_held_out_episodes(tiny_root):
    dm = OfflineDataModule(str(tiny_root), batch_size=4, val_batches=0, val_fraction=0.5)
    dm.setup("fit")
    assert dm.train_replay.num_transitions == sum(t.transitions for t in dm.manifest.tasks)
    assert dm.val_dataloader() == []
