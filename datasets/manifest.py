"""``manifest.json``: building it from finished shards, reading it, and checking shards against it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robocds.datasets.episode import Episode, decode_episode
from robocds.datasets.errors import DatasetError
from robocds.datasets.recipe import Recipe, TaskRecipe, recipe_from_dict
from robocds.datasets.schema import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    SHARD_FIELD_TYPES,
    SHARD_PATTERN,
    EpisodeMeta,
    Manifest,
    ShardEntry,
    TaskEntry,
    check_fields,
    episode_key,
    shard_relpath,
)
from robocds.datasets.storage import (
    exists,
    is_url,
    iter_tar_samples,
    join,
    local_path,
    read_bytes,
    read_hashed,
    sha256,
    write_json_atomic,
)
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.seeds import data_episode_seed, oracle_seed
from robocds.envs.suite import PROPRIO_DIM, TASK_NAMES, check_task, task_index
from robocds.errors import repeated


def decode_shard(
    data: bytes, source: str, task: str, image_size: int | None, first_episode: int | None = None
) -> Iterator[Episode]:
    """Every episode of a shard's bytes, validated; episodes must be consecutive from ``first_episode``."""
    expected = first_episode
    for sample in iter_tar_samples(data, source):
        episode = decode_episode(sample, source, expected_task=task, image_size=image_size, proprio_dim=PROPRIO_DIM)
        if expected is not None and episode.meta.episode != expected:
            raise DatasetError(
                f"episode {episode.meta.episode}, expected {expected} (episodes are consecutive in a shard)",
                source,
                sample["__key__"],
                "meta.json:episode",
            )
        expected = episode.meta.episode + 1
        yield episode


@dataclass(frozen=True)
class ShardSummary:
    """What the manifest needs from one shard: its entry and the returns of its episodes."""

    entry: ShardEntry
    returns: tuple[float, ...]


def summarise_shard(relpath: str, data: bytes, metas: Sequence[EpisodeMeta]) -> ShardSummary:
    """The manifest entry of a shard's bytes, from the metadata of its episodes (frames are not needed)."""
    entry = ShardEntry(
        path=relpath,
        first_episode=metas[0].episode if metas else 0,
        samples=len(metas),
        transitions=sum(m.length for m in metas),
        successes=sum(m.success for m in metas),
        bytes=len(data),
        sha256=sha256(data),
    )
    return ShardSummary(entry, tuple(m.episode_return for m in metas))


RECORD_SUFFIX = ".json"  # <shard>.tar.json: generation's record of a finished shard


def record_relpath(relpath: str) -> str:
    """Where generation records a finished shard: beside it, ``shard-000000.tar.json``."""
    return relpath + RECORD_SUFFIX


def write_shard_record(root: str, summary: ShardSummary) -> None:
    """Record a shard that was just written (its manifest entry, sha256 included, and its episode returns),
    atomically and after the shard: a shard counts as finished once its record exists."""
    record = {"entry": asdict(summary.entry), "returns": list(summary.returns)}
    write_json_atomic(root, record_relpath(summary.entry.path), record)


def read_shard_record(root: str, relpath: str) -> ShardSummary | None:
    """The record of the finished shard ``relpath`` under a local ``root``; None when there is none."""
    if not exists(root, record_relpath(relpath)):
        return None
    source = join(root, record_relpath(relpath))
    try:
        data = json.loads(read_bytes(root, record_relpath(relpath)))
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"not valid JSON ({err}); delete it and rerun the same command", source) from None
    if not isinstance(data, dict):
        raise DatasetError("expected a JSON object; delete it and rerun the same command", source)
    entry = ShardEntry(**check_fields(data.get("entry"), SHARD_FIELD_TYPES, source, prefix="entry."))
    returns = data.get("returns")
    if not isinstance(returns, list) or not all(isinstance(r, (int, float)) for r in returns):
        raise DatasetError("expected a list of numbers", source, field="returns")
    return ShardSummary(entry, tuple(float(r) for r in returns))


def verify_finished_shard(root: str, summary: ShardSummary) -> None:
    """A finished shard still has the bytes its record gives (size and sha256, hashed as it is read)."""
    location = join(root, summary.entry.path)
    try:
        data, digest = read_hashed(location)
    except FileNotFoundError:
        raise DatasetError("missing: generation has not finished", location) from None
    if len(data) != summary.entry.bytes or digest != summary.entry.sha256:
        raise DatasetError(
            f"changed since it was written (sha256 {digest[:12]}..., {len(data)} bytes; its record "
            f"{record_relpath(summary.entry.path)} says {summary.entry.sha256[:12]}..., {summary.entry.bytes} bytes): "
            "delete the shard and its record, then rerun the same command to write it again",
            location,
            field="sha256",
        )


def build_manifest(root: str, recipe: Recipe, known: dict[str, ShardSummary] | None = None) -> Manifest:
    """Summarise every shard of ``recipe`` under ``root`` (all must exist).

    Shards in ``known`` (relative path -> summary: written or verified by the calling run) are not
    read again. Every other shard of a local root must have its generation record and still hash to
    it (a shard whose bytes changed since it was written is refused, not re-listed with its new
    hash); under a URL, which keeps no records, it is read back and fully validated.
    """
    known = known or {}
    tasks = []
    for task in recipe.tasks:
        summaries: list[ShardSummary] = []
        for index in range(recipe.num_shards(task.task)):
            relpath = shard_relpath(task.task, index)
            first = index * recipe.episodes_per_shard
            count = min(recipe.episodes_per_shard, task.episodes - first)
            source = join(root, relpath)
            if relpath in known:
                summary = known[relpath]
            elif not is_url(root):
                if not exists(root, relpath):
                    raise DatasetError("missing shard: generation has not finished", source)
                record = read_shard_record(root, relpath)
                if record is None:
                    raise DatasetError(
                        f"no record of a finished write ({record_relpath(relpath)}): rerun the generation command "
                        "to write it again",
                        source,
                    )
                verify_finished_shard(root, record)
                summary = record
            else:
                data = read_bytes(root, relpath)
                metas = [e.meta for e in decode_shard(data, source, task.task, recipe.image_size, first)]
                summary = summarise_shard(relpath, data, metas)
            if summary.entry.samples != count or summary.entry.first_episode != first:
                raise DatasetError(
                    f"{summary.entry.samples} samples from episode {summary.entry.first_episode}, "
                    f"the recipe gives {count} from episode {first}",
                    source,
                    field="samples",
                )
            summaries.append(summary)
        shards = tuple(s.entry for s in summaries)
        n_episodes = sum(s.samples for s in shards)
        transitions = sum(s.transitions for s in shards)
        tasks.append(
            TaskEntry(
                name=task.task,
                episodes=n_episodes,
                transitions=transitions,
                success_rate=sum(s.successes for s in shards) / n_episodes,
                mean_return=float(np.mean([r for s in summaries for r in s.returns])),
                mean_length=transitions / n_episodes,
                # A mixture's noise per component is in ``recipe``; here its episode-weighted mean.
                random_action_prob=_mean_noise(task, "random_action_prob"),
                position_std=_mean_noise(task, "position_std"),
                shards=shards,
            )
        )
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=recipe.name,
        env=recipe.env,
        proprio_dim=PROPRIO_DIM,
        reward_tasks=TASK_NAMES,
        tasks=tuple(tasks),
        recipe=recipe.to_json_dict(),
    )


def _mean_noise(task: TaskRecipe, name: str) -> float:
    return sum(c.episodes * float(getattr(c, name)) for c in task.mixture()) / task.episodes


def read_manifest(root: str) -> Manifest:
    """The manifest of the dataset at ``root``, checked against this code's schema and task suite."""
    source = join(root, MANIFEST_FILE)
    if not is_url(root) and not exists(root, MANIFEST_FILE):
        hint = "" if not Path(local_path(root)).is_dir() else " (generation unfinished? rerun the same command)"
        raise DatasetError(f"missing{hint}", source)
    try:
        data = json.loads(read_bytes(root, MANIFEST_FILE))
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"not valid JSON ({err})", source) from None
    manifest = Manifest.from_json_dict(data, source)
    for i, task in enumerate(manifest.tasks):
        try:
            check_task(task.name)
        except ValueError as err:
            raise DatasetError(str(err), source, field=f"tasks[{i}].name") from None
    for name in manifest.reward_tasks:
        try:
            check_task(name)
        except ValueError as err:
            raise DatasetError(str(err), source, field="reward_tasks") from None
    if manifest.proprio_dim != PROPRIO_DIM:
        raise DatasetError(f"{manifest.proprio_dim}, the environment's is {PROPRIO_DIM}", source, field="proprio_dim")
    check_manifest_values(manifest, source)
    return manifest


def check_manifest_values(manifest: Manifest, source: str) -> None:
    """What the schema's types cannot say: names listed once, every task with a reward column, shard paths that
    stay inside the dataset (``<task>/shard-NNNNNN.tar``, episodes consecutive from 0), counts that add up,
    and a recorded recipe of the same tasks. Errors name the manifest field and its value."""

    def bad(field: str, problem: str) -> DatasetError:
        return DatasetError(problem, source, field=field)

    names = [task.name for task in manifest.tasks]
    for key, listed in (("tasks", names), ("reward_tasks", manifest.reward_tasks)):
        if twice := repeated(listed):
            raise bad(key, f"{twice} listed more than once")
    for i, task in enumerate(manifest.tasks):
        where = f"tasks[{i}]"
        if task.name not in manifest.reward_tasks:
            raise bad(
                f"{where}.name", f"{task.name!r} has no reward column (reward_tasks: {list(manifest.reward_tasks)})"
            )
        if not 0.0 <= task.success_rate <= 1.0:
            raise bad(f"{where}.success_rate", f"{task.success_rate}: must be in [0, 1]")
        first = 0
        for j, shard in enumerate(task.shards):
            entry = f"{where}.shards[{j}]"
            folder, _, name = shard.path.partition("/")
            if folder != task.name or not SHARD_PATTERN.match(name):
                raise bad(
                    f"{entry}.path", f"{shard.path!r}: expected '{task.name}/shard-NNNNNN.tar' inside the dataset"
                )
            if shard.first_episode != first:
                raise bad(
                    f"{entry}.first_episode", f"{shard.first_episode}, the shards before it end at episode {first}"
                )
            for count in ("samples", "transitions", "successes", "bytes"):
                if getattr(shard, count) < 0:
                    raise bad(f"{entry}.{count}", f"{getattr(shard, count)}: must be >= 0")
            first += shard.samples
        paths = [shard.path for shard in task.shards]
        if twice := repeated(paths):
            raise bad(f"{where}.shards", f"{twice} listed more than once")
        for count, total in (("episodes", first), ("transitions", sum(shard.transitions for shard in task.shards))):
            if getattr(task, count) != total:
                raise bad(f"{where}.{count}", f"{getattr(task, count)}, its shards list {total}")
    recipe = manifest_recipe(manifest, source)
    if sorted(recipe.task_names) != sorted(names):
        raise bad("recipe.tasks", f"{sorted(recipe.task_names)}, the manifest's tasks are {sorted(names)}")


def read_shard(location: str, shard: ShardEntry, task: str, image_size: int | None, check_hash: bool = True) -> bytes:
    """A shard's bytes, read once and hashed as they arrive, checked against its manifest entry (size, and
    sha256 with ``check_hash``). On a mismatch the bytes are decoded first, so that a damaged sample is
    named precisely (shard, key, field); otherwise the error names the shard and the manifest field."""
    try:
        data, digest = read_hashed(location, digest=check_hash)
    except FileNotFoundError:
        raise DatasetError("missing shard listed in the manifest", location) from None
    for name, found in (("bytes", len(data)), ("sha256", digest if check_hash else shard.sha256)):
        if found != getattr(shard, name):
            for _ in decode_shard(data, location, task, image_size, shard.first_episode):
                pass
            raise DatasetError(
                f"manifest says {getattr(shard, name)!r}, the shard has {found!r}", location, field=f"manifest:{name}"
            )
    return data


def iter_shard(
    root: str, manifest: Manifest, task: TaskEntry, shard: ShardEntry, check_hash: bool = True
) -> Iterator[Episode]:
    """Decode one shard episode by episode, checked against its manifest entry.

    Only the shard's (compressed) bytes and the episode being yielded are held. Size and sha256 are
    checked before the first episode (``read_shard``); the sample count, transitions and successes
    once the last episode has been yielded, so a consumer that must not keep bad data (an export)
    treats what it received as provisional until the iterator is exhausted.
    """
    source = join(root, shard.path)
    recipe = manifest_recipe(manifest, join(root, MANIFEST_FILE))
    data = read_shard(source, shard, task.name, manifest.image_size, check_hash)
    metas = []
    for episode in decode_shard(data, source, task.name, manifest.image_size, shard.first_episode):
        check_provenance(source, episode.meta, recipe)
        metas.append(episode.meta)
        yield episode
    check_shard(source, metas, shard)


def load_shard(
    root: str, manifest: Manifest, task: TaskEntry, shard: ShardEntry, check_hash: bool = True
) -> list[Episode]:
    """Decode one shard and check it against its manifest entry (size, sha256, sample and transition counts)."""
    return list(iter_shard(root, manifest, task, shard, check_hash))


def iter_task_episodes(root: str, manifest: Manifest, task: str, check_hash: bool = True) -> Iterator[Episode]:
    """Every episode of ``task`` in order, streamed one at a time (see ``iter_shard``), every shard verified."""
    entry = manifest.task(task)
    for shard in entry.shards:
        yield from iter_shard(root, manifest, entry, shard, check_hash)


def check_shard(source: str, metas: Sequence[EpisodeMeta], shard: ShardEntry) -> None:
    """Compare a decoded shard's counts with its manifest entry; errors name the shard and the manifest field
    (its size and sha256 are checked as it is read, see ``read_shard``)."""
    found = {
        "samples": len(metas),
        "transitions": sum(m.length for m in metas),
        "successes": sum(m.success for m in metas),
    }
    for name, value in found.items():
        if value != getattr(shard, name):
            raise DatasetError(
                f"manifest says {getattr(shard, name)!r}, the shard has {value!r}", source, field=f"manifest:{name}"
            )


def check_provenance(source: str, meta: EpisodeMeta, recipe: Recipe) -> None:
    """``meta`` is the episode this dataset's recipe generates at its index: its reset seed and oracle seed derive
    from the recipe's base seed, its noise is the recipe's for that index. A shard copied in from another
    dataset (its manifest entry edited to match its bytes) fails here, naming the sample and the field."""
    key = episode_key(meta.task, meta.episode)
    if meta.task not in recipe.task_names:
        raise DatasetError(f"{meta.task!r}, not a task of this dataset's recipe", source, key, "meta.json:task")
    task = recipe.task(meta.task)
    if not 0 <= meta.episode < task.episodes:
        problem = f"{meta.episode}: the recipe has episodes 0-{task.episodes - 1}"
        raise DatasetError(problem, source, key, "meta.json:episode")
    expected_seed = data_episode_seed(recipe.base_seed, task_index(meta.task), meta.episode)
    noise = task.noise_of(meta.episode)
    expected = {
        "seed": expected_seed,
        "oracle_seed": oracle_seed(expected_seed),
        "random_action_prob": noise.random_action_prob,
        "position_std": noise.position_std,
    }
    for name, value in expected.items():
        if getattr(meta, name) != value:
            raise DatasetError(
                f"{getattr(meta, name)!r}, but this dataset's recipe (base_seed {recipe.base_seed}) gives {value!r}: "
                "the episode comes from another dataset",
                source,
                key,
                f"meta.json:{name}",
            )


def manifest_recipe(manifest: Manifest, source: str) -> Recipe:
    """The recipe recorded in ``manifest`` (the reference every episode's provenance is checked against)."""
    return recipe_from_dict(manifest.recipe, f"{source}:recipe")


@dataclass
class TaskStats:
    """Per-episode summaries of one task, gathered while verifying (frames are not kept)."""

    name: str
    episodes: list[int] = field(default_factory=list)  # episode index within the task, in reading order
    lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    action_counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_ACTIONS, dtype=np.int64))

    def add(self, episode: Episode) -> None:
        self.episodes.append(episode.meta.episode)
        self.lengths.append(episode.length)
        self.successes.append(episode.meta.success)
        self.returns.append(episode.meta.episode_return)
        self.action_counts += np.bincount(episode.actions, minlength=NUM_ACTIONS)


def verify_dataset(root: str, manifest: Manifest | None = None, progress: bool = False) -> dict[str, TaskStats]:
    """Check every shard against the manifest and the schema; return per-task statistics.

    Checks: schema version and task names (``read_manifest``), every listed shard present, no
    unlisted shard files, every sample decodes and validates, per-shard sample/transition counts,
    sizes and sha256, and the per-task totals. The first problem raises a ``DatasetError``.
    """
    manifest = manifest or read_manifest(root)
    stats: dict[str, TaskStats] = {}
    total = sum(len(t.shards) for t in manifest.tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="shard", desc="verify", disable=None)  # None: only on a terminal
    for task in manifest.tasks:
        if not is_url(root):
            listed = {Path(s.path).name for s in task.shards}
            folder = local_path(root) / task.name
            on_disk = {p.name for p in folder.glob("shard-*.tar")} if folder.is_dir() else set()
            for name in sorted(on_disk - listed):
                if SHARD_PATTERN.match(name):
                    raise DatasetError(
                        "shard file not listed in the manifest", str(folder / name), field="manifest:shards"
                    )
        task_stats = TaskStats(task.name)
        for shard in task.shards:
            for episode in iter_shard(root, manifest, task, shard):
                task_stats.add(episode)
            if bar is not None:
                bar.update()
        stats[task.name] = task_stats
    if bar is not None:
        bar.close()
    return stats
