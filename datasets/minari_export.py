"""Export a robocds dataset to Minari, the offline-RL ecosystem's format: one Minari dataset per task.

``out`` becomes a Minari datasets root (point ``MINARI_DATASETS_PATH`` at it); the dataset of task
``<task>`` is ``<namespace>/<task>-v0``, the namespace ``robocds/<dataset name>`` by default:

    <out>/robocds/namespace_metadata.json
    <out>/robocds/tiny/namespace_metadata.json
    <out>/robocds/tiny/lift-cube-v0/data/metadata.json      Minari's metadata, plus a "robocds" entry
    <out>/robocds/tiny/lift-cube-v0/data/main_data.hdf5     episode_<i> groups, i = the robocds episode index

Each Minari episode is one robocds episode, step for step (no simulation is re-run): the task's own
reward column as ``rewards``, every task's reward and success in ``infos`` for relabeling, frames
stored losslessly (Minari's JPEG encoding is turned off). The env spec is ``robocds/<task>-v0`` with
the env settings the manifest records (image size, horizon, renderer, substeps, camera), so
``recover_environment()`` builds the environment that recorded the data.

Streaming: shards are read one at a time and episodes handed to Minari one at a time, so memory is
one shard's compressed bytes plus one decoded episode, whatever the dataset's size.

Interruption: a task is written into a hidden temporary Minari root inside ``out``
(``.<task>.<pid>.tmp``) and its dataset folder renamed into place only once complete, its counts
checked against the manifest and its files fsynced. A rerun of the same command keeps the tasks
already in place (same manifest sha256) and restarts any task that was interrupted from its first
episode, after deleting the stale temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robocds.datasets.episode import Episode
from robocds.datasets.errors import DatasetError
from robocds.datasets.manifest import iter_task_episodes, read_manifest
from robocds.datasets.recipe import Recipe, recipe_from_dict
from robocds.datasets.schema import MANIFEST_FILE, TEMP_SUFFIX, Manifest
from robocds.datasets.storage import join, read_bytes, sha256, write_json_atomic
from robocds.envs.env import INFO_SUCCESS, INFO_TASK_REWARDS, INFO_TASK_SUCCESSES
from robocds.envs.registration import env_id
from robocds.envs.seeds import EVAL_SEED_START, SEED_END
from robocds.envs.tasks import task_index

EXTRA = "robocds[minari]"
NAMESPACE_ROOT = "robocds"  # default namespace: robocds/<dataset name>
VERSION = 0  # the -v<N> of every exported dataset id
METADATA_KEY = "robocds"  # our entry in each Minari dataset's metadata.json
DATA_FORMAT = "hdf5"  # Minari's default storage; h5py is the only extra dependency it needs
DATASETS_PATH_VAR = "MINARI_DATASETS_PATH"
# Minari warns about every optional metadata field left unset; these have no meaningful value here.
_UNSET_FIELD_WARNINGS = r"`(code_permalink|author_email|eval_env)` is set to None"


@dataclass(frozen=True)
class TaskExport:
    """What happened to one task's Minari dataset."""

    task: str
    dataset_id: str  # what minari.load_dataset takes
    path: Path  # the dataset's folder
    episodes: int
    steps: int
    kept: bool  # True: already exported from the same manifest by an earlier run, left as it was


def import_minari() -> Any:
    """The ``minari`` module, or an ``ImportError`` saying which extra installs it."""
    try:
        import h5py  # noqa: F401 - Minari's HDF5 storage needs it, and only says so when first writing
        import minari
    except ImportError as err:
        raise ImportError(f"minari: not installed ({err}); pip install '{EXTRA}'") from None
    return minari


def dataset_id(namespace: str, task: str) -> str:
    return f"{namespace}/{task}-v{VERSION}"


def dataset_folder(out: Path, namespace: str, task: str) -> Path:
    """Where Minari keeps dataset ``dataset_id(namespace, task)`` under the datasets root ``out``."""
    return out / namespace / f"{task}-v{VERSION}"


def episode_buffer(episode: Episode, column: int) -> Any:
    """One robocds episode (L steps, L+1 states) as a Minari ``EpisodeBuffer``.

    ``observations``: ``{"image": uint8 [L+1, S, S, 3], "proprio": float32 [L+1, P]}``; ``actions``
    int64 [L]; ``rewards`` float32 [L] (reward column ``column``: the exported task's own);
    ``terminations``/``truncations`` bool [L]; ``infos`` as the env returns them after ``reset`` and
    each step (L+1 rows, Minari's convention): ``task_rewards`` float32 [L+1, R], ``task_successes``
    bool [L+1, R], ``is_success`` bool [L+1]. Row 0 is the reset state, where no task is solved
    (objects spawn on the table, clear of both zones; the export test checks this against the env).
    """
    from minari.data_collector import EpisodeBuffer

    rewards, successes = episode.task_rewards, episode.task_successes
    task_successes = np.concatenate([np.zeros((1, successes.shape[1]), bool), successes])
    return EpisodeBuffer(
        id=episode.meta.episode,
        seed=episode.meta.seed,
        observations={"image": np.ascontiguousarray(episode.frames), "proprio": episode.proprio},
        actions=episode.actions,
        rewards=rewards[:, column],
        terminations=episode.terminated,
        truncations=episode.truncated,
        infos={
            INFO_TASK_REWARDS: np.concatenate([np.zeros((1, rewards.shape[1]), np.float32), rewards]),
            INFO_TASK_SUCCESSES: task_successes,
            INFO_SUCCESS: task_successes[:, column],
        },
    )


def robocds_metadata(manifest: Manifest, recipe: Recipe, task: str, manifest_sha256: str) -> dict[str, Any]:
    """Our entry in the Minari metadata: where the data came from and how to reproduce or relabel it."""
    entry = manifest.task(task)
    return {
        "dataset": manifest.name,
        "task": task,
        "manifest_sha256": manifest_sha256,
        "schema_version": manifest.schema_version,
        "episodes": entry.episodes,
        "transitions": entry.transitions,
        "oracle_success_rate": entry.success_rate,
        # The oracle's noise levels in episode order: the first components[0]["episodes"] episodes use the first.
        "oracle_noise": [asdict(component) for component in recipe.task(task).mixture()],
        "base_seed": recipe.base_seed,
        "task_index": task_index(task),
        "episode_seeds": "robocds.envs.seeds.data_episode_seed(base_seed, task_index, episode); "
        "each Minari episode's seed is its reset seed",
        "data_seed_range": [0, EVAL_SEED_START],
        "eval_seed_range": [EVAL_SEED_START, SEED_END],
        "env_settings": manifest.env.to_json_dict(),
        "reward_tasks": list(manifest.reward_tasks),
        "actions": list(manifest.actions),
        "recipe": manifest.recipe,
    }


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[None]:
    """Point Minari at ``path`` for the duration (it reads ``MINARI_DATASETS_PATH`` on every call)."""
    before = os.environ.get(DATASETS_PATH_VAR)
    os.environ[DATASETS_PATH_VAR] = str(path)
    try:
        yield
    finally:
        if before is None:
            del os.environ[DATASETS_PATH_VAR]
        else:
            os.environ[DATASETS_PATH_VAR] = before


def exported_manifest_sha256(folder: Path) -> str:
    """The manifest sha256 recorded in an exported Minari dataset's metadata."""
    path = folder / "data" / "metadata.json"
    try:
        value = json.loads(path.read_text())[METADATA_KEY]["manifest_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        problem = "exists and is not a complete robocds export; remove it or choose another --out"
        raise DatasetError(problem, str(folder)) from None
    return str(value)


def export_minari(
    root: str,
    out: str | Path,
    tasks: Sequence[str] | None = None,
    namespace: str | None = None,
    progress: bool = True,
    on_episode: Callable[[str, int], None] | None = None,
) -> list[TaskExport]:
    """Export the dataset at ``root`` (every task, or ``tasks``) to Minari datasets under ``out``.

    Every shard is verified against the manifest while it streams; a task whose folder already
    holds an export of the same manifest is kept, one of another dataset is refused. ``on_episode``
    is called with (task, episode index) after each episode is handed to Minari (progress, tests).
    """
    minari = import_minari()
    from minari.namespace import NAMESPACE_METADATA_FILENAME, validate_namespace

    manifest = read_manifest(root)
    manifest_sha256 = sha256(read_bytes(root, MANIFEST_FILE))
    recipe = recipe_from_dict(manifest.recipe, f"{join(root, MANIFEST_FILE)}: field 'recipe'")
    names = list(tasks) if tasks else list(manifest.task_names)
    for name in names:
        if name not in manifest.task_names:
            holds = ", ".join(manifest.task_names)
            raise ValueError(f"task {name!r}: not in dataset {manifest.name!r} (it holds: {holds})")
    namespace = namespace or f"{NAMESPACE_ROOT}/{manifest.name}"
    try:
        validate_namespace(namespace)
        minari.dataset.minari_dataset.parse_dataset_id(dataset_id(namespace, names[0]))
    except ValueError as err:
        raise ValueError(f"namespace {namespace!r}: not a valid Minari namespace ({err})") from None

    # Absolute: Minari joins the file names it writes onto MINARI_DATASETS_PATH, which it also prefixes
    # itself, so a relative root would be resolved twice (minari_datasets/.../minari_datasets/...).
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise DatasetError("exists and is not a folder", str(out))
    out.mkdir(parents=True, exist_ok=True)
    results, todo = [], []
    for name in names:
        for stale in out.glob(f".{name}.*{TEMP_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed run's: its task restarts (or was already in place)
        final = dataset_folder(out, namespace, name)
        if final.exists():
            found = exported_manifest_sha256(final)
            if found != manifest_sha256:
                raise DatasetError(
                    f"holds an export of another dataset (manifest sha256 {found[:12]}..., this one's "
                    f"{manifest_sha256[:12]}...); remove it or choose another --out",
                    str(final),
                )
            entry = manifest.task(name)
            ident = dataset_id(namespace, name)
            results.append(TaskExport(name, ident, final, entry.episodes, entry.transitions, kept=True))
        else:
            todo.append(name)

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(manifest.task(name).episodes for name in todo), unit="episode", desc="export", disable=None
        )

    def step(task: str, index: int) -> None:
        if bar is not None:
            bar.update()
        if on_episode is not None:
            on_episode(task, index)

    try:
        for name in todo:
            results.append(_export_task(minari, root, manifest, recipe, name, namespace, out, manifest_sha256, step))
    finally:
        if bar is not None:
            bar.close()
        for name in todo:  # again here: a Ctrl-C can land inside a task's own clean-up and cut it short
            shutil.rmtree(temp_root(out, name), ignore_errors=True)
    _write_namespace_metadata(out, namespace, manifest, NAMESPACE_METADATA_FILENAME)
    order = {name: i for i, name in enumerate(names)}
    return sorted(results, key=lambda r: order[r.task])


def _export_task(
    minari: Any,
    root: str,
    manifest: Manifest,
    recipe: Recipe,
    task: str,
    namespace: str,
    out: Path,
    manifest_sha256: str,
    on_episode: Callable[[str, int], None],
) -> TaskExport:
    """Write one task's Minari dataset into a temporary root inside ``out``, check it, and rename it into place."""
    import gymnasium as gym

    import robocds.envs  # noqa: F401 - registers robocds/<task>-v0

    final = dataset_folder(out, namespace, task)
    tmp = temp_root(out, task)
    ident = dataset_id(namespace, task)
    entry = manifest.task(task)
    column = list(manifest.reward_tasks).index(task)
    try:
        with minari_root(tmp):
            env = gym.make(env_id(task), **manifest.env.env_kwargs())  # the settings the data was recorded with
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_UNSET_FIELD_WARNINGS, category=UserWarning)
                    dataset = minari.create_dataset_from_buffers(
                        ident,
                        [],  # episodes are streamed into the storage below, one at a time
                        env=env,
                        algorithm_name="robocds scripted oracle (noise in metadata['robocds']['oracle_noise'])",
                        author="robocds",
                        description=f"robocds dataset {manifest.name!r}, task {task}: "
                        f"{entry.episodes} scripted-oracle episodes, {entry.transitions} steps. "
                        f"{recipe.description}".strip(),
                        requirements=["robocds"],
                        data_format=DATA_FORMAT,
                        jpeg_encoding=False,  # lossless frames: the export equals the shards
                    )
            finally:
                env.close()

            def buffers() -> Iterator[Any]:
                for episode in iter_task_episodes(root, manifest, task):
                    yield episode_buffer(episode, column)
                    on_episode(task, episode.meta.episode)

            storage = dataset.storage
            storage.update_episodes(buffers())
            storage.update_metadata({METADATA_KEY: robocds_metadata(manifest, recipe, task, manifest_sha256)})
            if (storage.total_episodes, storage.total_steps) != (entry.episodes, entry.transitions):
                raise DatasetError(
                    f"wrote {storage.total_episodes} episodes, {storage.total_steps} steps; the manifest lists "
                    f"{entry.episodes} and {entry.transitions}",
                    str(tmp),
                )
        built = dataset_folder(tmp, namespace, task)
        _fsync_tree(built)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TaskExport(task, ident, final, entry.episodes, entry.transitions, kept=False)


def temp_root(out: Path, task: str) -> Path:
    """This process's hidden Minari root for building ``task`` (same filesystem as ``out``: rename is atomic)."""
    return out / f".{task}.{os.getpid()}{TEMP_SUFFIX}"


def _write_namespace_metadata(out: Path, namespace: str, manifest: Manifest, filename: str) -> None:
    """Minari's namespace files (one per level), written once and atomically."""
    parts = Path(namespace).parts
    for depth in range(1, len(parts) + 1):
        relpath = str(Path(*parts[:depth], filename))
        if (out / relpath).is_file():
            continue
        is_leaf = depth == len(parts)
        description = (
            f"robocds dataset {manifest.name!r}: one Minari dataset per task" if is_leaf else "exported from robocds"
        )
        write_json_atomic(str(out), relpath, {"description": description})


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` to disk: the rename must not expose a dataset whose bytes are not there."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
