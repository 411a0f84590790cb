"""Work on a Ray cluster (the optional ``ray`` extra, docs/SCALING.md): connect, check that a folder is one
writable folder on every node, and generate a dataset's shards as Ray tasks.

    robocds-generate benchmark --root /shared/data/benchmark --executor ray --address auto

Generation on a cluster is the ``--shard-range`` machinery with Ray doing the bookkeeping: every unfinished
shard of the plan (or of ``--shard-range``) is one Ray task (1 CPU) that runs ``generate`` on that one-shard
range in a Ray worker, writing the shard and its record under ``--root``, a folder every node must see
(checked first, ``check_shared_folder``). Once every shard of the plan and its record exist, this process
writes ``manifest.json`` from the records, so the dataset is byte-identical to a local generation of the
same recipe. Finished shards are kept: an interrupted run resumes with the same command. At the first
failed shard the other tasks are cancelled (a shard cut short leaves only a temporary file, which the next
run removes) and the failure is raised.

Ray is imported here only when it is used (``require_ray``): the default install has no Ray.
``robocds-compare --executor ray`` (``robocds.pipeline.ray_executor``) uses the same helpers.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robocds.errors import ConfigError, UserError, one_line

if TYPE_CHECKING:
    from robocds.datasets.generate import GenerateResult
    from robocds.datasets.recipe import Recipe

RAY_EXTRA = "pip install 'robocds[ray]'"
PROBE_PREFIX = ".robocds-probe-"  # the probe files of check_shared_folder (removed at once)
WAIT_SECONDS = 1.0  # ray.wait timeout between checks for Ctrl-C


def require_ray(flag: str = "--executor ray") -> Any:
    """The ``ray`` module; a one-line ``ConfigError`` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{flag}: needs Ray, which is not installed ({RAY_EXTRA})") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Connect this process to the Ray cluster at ``address`` (``ray.init``'s: ``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``; None: ``RAY_ADDRESS``, else the cluster this machine joined with ``ray start``, else a new
    local instance), unless it already is; the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ConfigError(f"--address {address!r}: no Ray cluster there ({one_line(err)})") from None
    return ray


def describe_ray_error(error: BaseException) -> str:
    """One line for a Ray task's failure: the task's own exception (type and message) when it raised one,
    else what Ray says (a worker or node lost, a cancelled task)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {one_line(cause)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def probe_folder(folder: str, token: str) -> str | None:
    """On a node: None when ``folder`` holds the file ``token`` the driver wrote and a file can be written and
    removed there; else what is wrong."""
    path = Path(folder)
    if not (path / token).is_file():
        return "is not the folder this process sees there (its probe file is missing)"
    mine = path / f"{token}-{os.getpid()}"
    try:
        mine.write_bytes(b"")
        mine.unlink()
    except OSError as err:
        return f"is not writable ({type(err).__name__}: {err.strerror or err})"
    return None


def check_shared_folder(folder: Path, flag: str) -> None:
    """Refuse, in one line, an existing ``folder`` that a node of the cluster (one with CPUs: where stages run)
    cannot write, or where it does not find a file this process wrote (another disk under the same path): one
    probe task per node writes and removes a file there."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = folder / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    token.write_bytes(b"")
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0]
        probe, refs = ray.remote(probe_folder), []
        for node in nodes:
            on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            refs.append(
                probe.options(num_cpus=0, max_retries=0, scheduling_strategy=on_node).remote(str(folder), token.name)
            )
        for node, problem in zip(nodes, ray.get(refs)):
            if problem is not None:
                raise ConfigError(
                    f"{flag} {str(folder)!r}: {problem} on the cluster's node {node.get('NodeManagerAddress')}; "
                    "use a folder on storage every node mounts at the same path"
                )
    finally:
        token.unlink(missing_ok=True)


def generate_range(recipe_json: dict, root: str, index: int) -> list[str]:
    """In a Ray worker: shard ``index`` of the plan, as ``--shard-range index:index+1`` (no manifest)."""
    from robocds.datasets.generate import generate
    from robocds.datasets.recipe import recipe_from_dict

    shard = range(index, index + 1)
    return generate(recipe_from_dict(recipe_json), root, 0, shard, progress=False, manifest=False).written


def generate_on_ray(
    recipe: Recipe, root: str, shard_range: range | None = None, progress: bool = True, cpus: float = 1
) -> GenerateResult:
    """``robocds.datasets.generate.generate`` with one Ray task (``cpus`` CPUs) per unfinished shard of the plan
    (or of ``shard_range``) on the connected cluster; the manifest once every shard of the plan is finished."""
    from tqdm import tqdm

    from robocds.datasets.generate import (
        GenerateResult,
        check_recipe_lock,
        finished_shards,
        plan_shards,
        write_manifest,
    )
    from robocds.datasets.manifest import read_shard_record, record_relpath
    from robocds.datasets.storage import exists, is_url, local_path

    ray = require_ray()
    if is_url(root):
        raise ConfigError(f"--root {root!r}: --executor ray writes to a folder every node mounts, not to a URL")
    folder = local_path(root).resolve()  # the workers' working folders are not this process's
    root = str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_shared_folder(folder, "--root")
    jobs = plan_shards(recipe)
    selected = [jobs[i] for i in (shard_range if shard_range is not None else range(len(jobs)))]
    check_recipe_lock(root, recipe)
    kept = finished_shards(root, selected)  # verified before any new work
    todo = [job for job in selected if job.relpath not in kept]
    bar = tqdm(
        total=sum(job.episodes for job in todo), unit="ep", desc=f"generate {recipe.name} (ray)",
        disable=None if progress else True, dynamic_ncols=True,
    )  # fmt: skip
    if kept:
        bar.write(f"resuming: {len(kept)} finished shard(s) kept, {len(todo)} to write")
    start = time.perf_counter()
    task = ray.remote(generate_range).options(num_cpus=cpus, max_retries=0)
    recipe_json = recipe.to_json_dict()
    pending = {task.remote(recipe_json, root, job.global_index): job for job in todo}
    written, failure = {}, None
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as error:
                    if failure is None:
                        failure = job, error
                        for other in pending:  # queued ones never start; running ones stop (atomic writes)
                            ray.cancel(other)
                    continue
                record = read_shard_record(root, job.relpath)  # what the task wrote, as this process sees it
                if record is None:
                    raise RuntimeError(f"{root}/{job.relpath}: its Ray task finished but its record is missing")
                written[job.relpath] = record
                bar.update(job.episodes)
    except BaseException:  # Ctrl-C: stop the tasks; the finished shards stay for the next run
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if failure is not None:
        job, error = failure
        cause = getattr(error, "cause", None)
        if isinstance(cause, UserError):
            raise cause
        raise RuntimeError(
            f"generation failed in a Ray task on shard {job.relpath} ({describe_ray_error(error)}); "
            "rerun the same command to resume"
        ) from error
    complete = all(exists(root, record_relpath(job.relpath)) for job in jobs)
    if complete:
        write_manifest(root, recipe, {**kept, **written})
    order = [job.relpath for job in jobs]
    return GenerateResult(
        sorted(written, key=order.index), list(kept), seconds, sum(job.episodes for job in todo), complete
    )
