"""Generate a dataset from a recipe: parallel, deterministic, resumable, atomic.

    robocds-generate tiny --root data/tiny
    python -m robocds.datasets.generate benchmark --root data/benchmark --workers 2

Work is split into shards (``episodes_per_shard`` consecutive episodes of one task). Every episode
is a pure function of the recipe and its index, so the dataset is byte-identical whatever the
number of workers or the order shards finish in. A shard is written to a hidden temporary name
and renamed once complete: an interrupted run (Ctrl-C, kill -9) restarted with the same command
skips the finished shards. ``manifest.json`` is written last, when every shard exists.

For clusters, ``--shard-range A:B`` makes a job produce only shards A..B-1 of the global plan
(``--list`` prints it); the job that completes the last shard writes the manifest (or run
``--manifest-only`` once all jobs are done). On a Ray cluster, ``--executor ray`` does that split itself:
one Ray task per shard, the manifest written once every shard is finished (``robocds.datasets.cluster``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robocds.datasets.episode import encode_episode
from robocds.datasets.errors import DatasetError
from robocds.datasets.manifest import (
    RECORD_SUFFIX,
    ShardSummary,
    build_manifest,
    read_shard_record,
    record_relpath,
    summarise_shard,
    verify_finished_shard,
    write_shard_record,
)
from robocds.datasets.recipe import Recipe, load_recipe, recipe_from_dict
from robocds.datasets.recording import record_episode
from robocds.datasets.schema import MANIFEST_FILE, RECIPE_FILE, shard_name, shard_relpath
from robocds.datasets.storage import (
    exists,
    is_url,
    join,
    local_path,
    read_bytes,
    remove_stale_temps,
    tar_bytes,
    write_bytes_atomic,
    write_json_atomic,
)
from robocds.envs.suite import CAMERAS, RENDERERS
from robocds.errors import (
    INTERRUPTED_STATUS,
    ConfigError,
    UserError,
    int_at_least,
    one_line,
    output_dir,
    run_cli,
    user_error_in,
)
from robocds.threads import worker_thread_environment


@dataclass(frozen=True)
class ShardJob:
    """One unit of work: episodes ``first_episode .. first_episode + episodes - 1`` of ``task``."""

    global_index: int  # position in the recipe's shard plan (what --shard-range selects)
    task: str
    index: int  # shard index within the task
    first_episode: int
    episodes: int

    @property
    def relpath(self) -> str:
        return shard_relpath(self.task, self.index)


def plan_shards(recipe: Recipe) -> list[ShardJob]:
    """Every shard of the dataset, task by task in recipe order."""
    jobs = []
    for task in recipe.tasks:
        for index in range(recipe.num_shards(task.task)):
            first = index * recipe.episodes_per_shard
            count = min(recipe.episodes_per_shard, task.episodes - first)
            jobs.append(ShardJob(len(jobs), task.task, index, first, count))
    return jobs


def parse_shard_range(text: str, total: int) -> range:
    """'A:B' (B exclusive; either side may be empty) -> range of global shard indices."""
    start_text, sep, stop_text = text.partition(":")
    try:
        if not sep:
            raise ValueError
        start = int(start_text) if start_text else 0
        stop = int(stop_text) if stop_text else total
    except ValueError:
        raise ConfigError(f"--shard-range={text!r}: expected START:STOP, e.g. 0:10") from None
    if not 0 <= start < stop <= total:
        raise ConfigError(f"--shard-range={text!r}: need 0 <= START < STOP <= {total} (the recipe has {total} shards)")
    return range(start, stop)


# ----------------------------------------------------------------------------- worker side

_env_cache: dict[tuple, Any] = {}  # one env per (task, settings) per process: building one costs ~0.1 s


def _env_for(recipe: Recipe, task: str):
    from robocds.envs.env import ManipulationEnv

    key = (task, recipe.env)
    if key not in _env_cache:
        for env in _env_cache.values():
            env.close()  # one live simulator per process is enough: shards come task by task
        _env_cache.clear()
        _env_cache[key] = ManipulationEnv.from_settings(task, recipe.env)
    return _env_cache[key]


def generate_shard(
    job: ShardJob, recipe: Recipe, root: str, on_episode: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Record, encode and atomically write one shard; returns its relative path and size."""
    env = _env_for(recipe, job.task)
    task = recipe.task(job.task)
    metas, samples = [], []
    for index in range(job.first_episode, job.first_episode + job.episodes):
        episode = record_episode(env, task.noise_of(index), recipe.base_seed, index)
        samples.append(encode_episode(episode))
        metas.append(episode.meta)  # the summary needs no frames: the arrays are freed with the episode
        if on_episode is not None:
            on_episode()
    data = tar_bytes(samples)
    write_bytes_atomic(root, job.relpath, data)
    summary = summarise_shard(job.relpath, data, metas)
    if not is_url(root):  # a URL cannot be listed, so a restarted URL job rewrites its range: no records
        write_shard_record(root, summary)  # after the shard: the shard counts as finished from now on
    return summary


def _worker_main(jobs: Any, results: Any, recipe_json: dict, root: str) -> None:
    """A worker process: take shard jobs until the ``None`` sentinel; report every episode and shard."""
    # Ctrl-C goes to the whole process group; only the parent handles it (it stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recipe = recipe_from_dict(recipe_json)
    while (job := jobs.get()) is not None:
        try:
            summary = generate_shard(job, recipe, root, on_episode=lambda: results.put(("episode", None)))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which stops the run
            cause = user_error_in(error)  # a full disk, a bad value: one line, as the parent would say it
            report = ("user_error", one_line(cause)) if cause else ("error", f"{job.relpath}: {traceback.format_exc()}")
            results.put(report)
            return
        results.put(("shard", summary))


# ----------------------------------------------------------------------------- driver


@dataclass
class GenerateResult:
    written: list[str]  # relative paths of the shards this run wrote
    skipped: list[str]  # finished shards found from an earlier run
    seconds: float
    episodes: int  # episodes recorded by this run
    manifest_written: bool

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else 0.0


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_recipe_lock(root: str, recipe: Recipe) -> None:
    """Refuse to mix shards of two different recipes in one root; record the recipe otherwise.

    Only finished shards are protected: a run that failed before finishing any shard never blocks the
    corrected command (its ``recipe.json`` is replaced).
    """
    if is_url(root):
        return
    if exists(root, RECIPE_FILE):
        source = join(root, RECIPE_FILE)
        try:
            previous = recipe_from_dict(json.loads(read_bytes(root, RECIPE_FILE)), source)
        except (ValueError, DatasetError) as err:
            previous, unreadable = None, f"unreadable ({err})"
        else:
            unreadable = ""
        if previous is None or previous.fingerprint() != recipe.fingerprint():
            finished = sorted(local_path(root).glob(f"*/shard-*.tar{RECORD_SUFFIX}"))
            if finished:
                why = unreadable or "this root holds a dataset of a different recipe (or different overrides)"
                raise DatasetError(
                    f"{why}, with {len(finished)} finished shard(s); rerun with the same recipe to resume, "
                    "or use an empty root",
                    source,
                )
    write_json_atomic(root, RECIPE_FILE, recipe.to_json_dict())


def finished_shards(root: str, jobs: list[ShardJob]) -> dict[str, ShardSummary]:
    """The shards of ``jobs`` an earlier run finished under a local ``root``, each re-verified against its
    record (size and sha256, one read): a kept shard whose bytes changed is a ``DatasetError`` naming it."""
    kept = {}
    for job in jobs:
        record = read_shard_record(root, job.relpath) if exists(root, job.relpath) else None
        if record is not None:  # a shard without its record was cut short between the two writes: redo it
            verify_finished_shard(root, record)
            kept[job.relpath] = record
    return kept


def generate(
    recipe: Recipe,
    root: str,
    workers: int | None = None,
    shard_range: range | None = None,
    progress: bool = True,
    start_method: str = "spawn",
    manifest: bool = True,
) -> GenerateResult:
    """Write the shards of ``recipe`` (or of ``shard_range``) under ``root``; the manifest when all exist.

    ``workers=0`` records in this process (no subprocesses); ``None`` uses one per available core.
    ``manifest=False`` never writes the manifest (a caller that runs many ranges at once writes it after them:
    ``robocds.datasets.cluster``).
    """
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers={workers}: must be >= 0")
    jobs = plan_shards(recipe)
    selected = [jobs[i] for i in (shard_range if shard_range is not None else range(len(jobs)))]
    check_recipe_lock(root, recipe)
    if not is_url(root):
        for task in recipe.task_names:
            folder = local_path(root) / task
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(folder, [shard_name(j.index) for j in selected if j.task == task])
    kept = {} if is_url(root) else finished_shards(root, selected)  # verified before any new work
    todo = [job for job in selected if job.relpath not in kept]
    skipped = list(kept)
    total_episodes = sum(job.episodes for job in todo)

    from tqdm import tqdm

    bar = tqdm(
        total=total_episodes,
        unit="ep",
        desc=f"generate {recipe.name}",
        disable=None if progress else True,  # None: only on a terminal (no bars in a log file)
        smoothing=0.05,
        dynamic_ncols=True,
    )
    if skipped:
        bar.write(f"resuming: {len(skipped)} finished shard(s) kept, {len(todo)} to write")
    start = time.perf_counter()
    summaries: list[ShardSummary] = []
    if todo and workers == 0:
        for job in todo:
            summaries.append(generate_shard(job, recipe, root, on_episode=lambda: bar.update(1)))
    elif todo:
        summaries = _run_pool(todo, recipe, root, min(workers, len(todo)), bar, start_method)
    seconds = time.perf_counter() - start
    bar.close()

    new = {s.entry.path: s for s in summaries}
    known = {**kept, **new}
    # URLs cannot be listed: a URL job writes the manifest only when it wrote the whole plan itself.
    complete = len(new) == len(jobs) if is_url(root) else all(exists(root, record_relpath(j.relpath)) for j in jobs)
    complete = complete and manifest
    if complete:
        write_manifest(root, recipe, known)
    written = sorted(new, key=lambda path: [job.relpath for job in jobs].index(path))
    return GenerateResult(written, skipped, seconds, total_episodes, complete)


def _run_pool(
    todo: list[ShardJob], recipe: Recipe, root: str, workers: int, bar, start_method: str
) -> list[ShardSummary]:
    """Run ``todo`` on ``workers`` processes; stop them all at the first error, dead worker or Ctrl-C."""
    ctx = mp.get_context(start_method)
    jobs, results = ctx.Queue(), ctx.Queue()
    for job in todo:
        jobs.put(job)
    for _ in range(workers):
        jobs.put(None)
    procs = [
        ctx.Process(target=_worker_main, args=(jobs, results, recipe.to_json_dict(), root), daemon=True)
        for _ in range(workers)
    ]
    with worker_thread_environment():  # one thread each: the workers render and simulate, one core apiece
        for proc in procs:
            proc.start()
    written: list[ShardSummary] = []
    try:
        while len(written) < len(todo):
            try:
                kind, payload = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"a generation worker died (exit code {dead[0].exitcode}); rerun the same command to resume"
                    ) from None
                continue
            if kind == "episode":
                bar.update(1)
            elif kind == "shard":
                written.append(payload)
                bar.set_postfix_str(f"shards {len(written)}/{len(todo)}", refresh=False)
            elif kind == "user_error":
                raise UserError(payload)
            else:
                raise RuntimeError(f"generation failed in a worker on shard {payload}")
    finally:
        # Normal end: the workers are leaving on their sentinels. Error or Ctrl-C: stop them now;
        # finished shards stay, and the next run cleans up the temporary file of a shard cut short.
        for proc in procs:
            if len(written) < len(todo) and proc.is_alive():
                proc.terminate()
            proc.join()
    return written


def write_manifest(root: str, recipe: Recipe, known: dict[str, ShardSummary] | None = None) -> None:
    manifest = build_manifest(root, recipe, known)
    write_json_atomic(root, MANIFEST_FILE, manifest.to_json_dict())


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robocds-generate",
        description="Record scripted-oracle episodes into per-task WebDataset shards with a manifest.",
    )
    parser.add_argument("recipe", help="recipe YAML file, or the name of a packaged recipe (tiny, benchmark)")
    parser.add_argument("--root", help="output folder or WebDataset writer URL (required unless --list)")
    parser.add_argument(
        "--workers", type=int_at_least(0), default=None, help="worker processes (default: one per core; 0: in-process)"
    )
    parser.add_argument("--shard-range", help="only shards START:STOP of the plan (see --list), for cluster jobs")
    parser.add_argument("--list", action="store_true", help="print the shard plan and exit")
    parser.add_argument(
        "--manifest-only", action="store_true", help="only (re)build manifest.json from finished shards"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: --workers processes here; ray: one Ray task per shard on a Ray cluster, --root on storage "
        "every node mounts, --workers not used (the ray extra; docs/SCALING.md)",
    )  # fmt: skip
    parser.add_argument(
        "--address", help="with --executor ray: the Ray cluster (auto, HOST:PORT or ray://HOST:PORT; default: "
        "RAY_ADDRESS, else the cluster this machine joined with `ray start`, else a new one here)",
    )  # fmt: skip
    overrides = parser.add_argument_group("recipe overrides")
    overrides.add_argument("--base-seed", type=int_at_least(0))
    overrides.add_argument("--image-size", type=int)
    overrides.add_argument("--max-steps", type=int_at_least(1))
    overrides.add_argument("--episodes-per-shard", type=int_at_least(1))
    overrides.add_argument("--renderer", choices=RENDERERS)
    overrides.add_argument("--camera", choices=tuple(CAMERAS), help="the policy's viewpoint (robocds.envs.suite)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = load_recipe(args.recipe)
    overrides = {
        "base_seed": args.base_seed,
        "image_size": args.image_size,
        "max_steps": args.max_steps,
        "episodes_per_shard": args.episodes_per_shard,
        "renderer": args.renderer,
        "camera": args.camera,
    }
    try:
        recipe = recipe.with_overrides(**overrides)
    except ValueError as err:
        raise ConfigError(f"recipe {recipe.name!r} with the overrides given: {err}") from None
    jobs = plan_shards(recipe)
    if args.list:
        for job in jobs:
            last = job.first_episode + job.episodes - 1
            print(f"{job.global_index:6d}  {job.relpath}  episodes {job.first_episode}..{last}")
        print(f"{len(jobs)} shards, {recipe.total_episodes} episodes")
        return 0
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address: only with --executor ray")
    if not args.root:
        raise ConfigError("--root: required (the output folder or URL), unless --list")
    if not is_url(args.root):
        output_dir(local_path(args.root), "--root")
    if args.manifest_only:
        write_manifest(args.root, recipe)
        print(f"wrote {join(args.root, MANIFEST_FILE)}")
        return 0
    shard_range = parse_shard_range(args.shard_range, len(jobs)) if args.shard_range else None
    try:
        if args.executor == "ray":
            from robocds.datasets.cluster import connect, generate_on_ray

            connect(args.address)
            result = generate_on_ray(recipe, args.root, shard_range, progress=not args.no_progress)
        else:
            result = generate(recipe, args.root, args.workers, shard_range, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("robocds-generate: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED_STATUS
    print(
        f"{len(result.written)} shard(s) written, {len(result.skipped)} kept from an earlier run; "
        f"{result.episodes} episodes in {result.seconds:.1f} s ({result.episodes_per_second:.2f} episodes/s)"
    )
    if result.manifest_written:
        print(f"manifest: {join(args.root, MANIFEST_FILE)}")
    else:
        print("manifest not written yet: other shards of the plan are missing (other --shard-range jobs?)")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-generate``)."""
    run_cli(main, "robocds-generate")


if __name__ == "__main__":
    cli()
