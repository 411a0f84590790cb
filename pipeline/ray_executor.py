"""``robocds-compare --executor ray``: the comparison's plan of stages on a Ray cluster (the ``ray`` extra).

    robocds-compare --scale evidence --out /shared/runs/evidence --executor ray --address auto

The plan is ``robocds.pipeline.compare.plan``'s and ``RayScheduler`` runs it with the local ``Scheduler``'s
loop (``robocds.pipeline.stages``): dependency order, plan-order priority, a stage whose output exists is
skipped, actions (a results-store record) run in this process, after a failure no new stage starts and the
running ones finish before the failure is raised. What differs is where a command runs:

- every command is a Ray task, submitted once the stages it comes after are done (``--jobs N``: at most N
  submitted at once; by default every ready stage, and Ray queues what the cluster has no room for). A fit
  (``robocds fit``) asks for ``--fit-gpus`` GPUs (default: 1 when the cluster has GPUs, else 0) and
  ``--fit-cpus`` CPUs, every other stage for ``--stage-cpus`` CPUs; the stage runs as a subprocess of the
  task, with that node's Python, as many threads as its CPUs (``OMP_NUM_THREADS`` & co.), its output in
  ``<out>/logs/<stage>.log``;
- generation is spread over the cluster, one task per shard (``robocds.datasets.cluster``), from here;
- one progress line per finished stage, with the node it ran on and the cluster's counts of this
  comparison's stages: running (started on a node), queued (submitted, waiting for room), done.

``--out`` must be a folder every node mounts at the same path (the stages write there, this process reads
their outputs back): before any stage, each node checks that it sees a file this process wrote there and
can write and remove one of its own, and a folder that fails is refused in one line. Every node needs the
same robocds installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from robocds.datasets.cluster import check_shared_folder, connect, describe_ray_error, require_ray
from robocds.errors import ConfigError
from robocds.pipeline.stages import Launcher, Process, Scheduler, Step
from robocds.threads import THREAD_COUNT_VARIABLES

EXECUTORS = ("local", "ray")
FIT_MODULE = "robocds.train"  # a stage running this module is a fit (GPUs)
GENERATE_MODULE = "robocds.datasets.generate"  # a stage running this module is spread over the cluster
TASK_LOST = 1  # the exit code given to a stage whose task ended without one (its worker or node was lost)
WAIT_SECONDS = 1.0  # ray.wait timeout between checks for Ctrl-C
STOP_SECONDS = 10.0  # a cancelled stage's process gets this long after SIGTERM before SIGKILL
UNLIMITED = 1 << 30  # --jobs not given: every ready stage is submitted


def number_at_least(low: float) -> Callable[[str], float]:
    """An argparse ``type``: a number >= ``low`` (Ray's CPUs and GPUs may be fractions)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {low}")
        return value

    parse.__name__ = f"number >= {low}"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and the Ray executor's options."""
    group = parser.add_argument_group("where the stages run (docs/SCALING.md)")
    group.add_argument(
        "--executor", choices=EXECUTORS, default="local",
        help="local: on this machine; ray: as Ray tasks on a Ray cluster, --out on storage every node mounts "
        "(needs the ray extra: pip install 'robocds[ray]')",
    )  # fmt: skip
    group.add_argument(
        "--address", help="with --executor ray: the Ray cluster (auto, HOST:PORT or ray://HOST:PORT; default: "
        "RAY_ADDRESS, else the cluster this machine joined with `ray start`, else a new one here)",
    )  # fmt: skip
    group.add_argument(
        "--fit-gpus", type=number_at_least(0), help="with --executor ray: GPUs per fit (default: 1 when the "
        "cluster has GPUs, else 0)",
    )  # fmt: skip
    group.add_argument(
        "--fit-cpus", type=number_at_least(0.01), help="with --executor ray: CPUs per fit (default 1)"
    )  # fmt: skip
    group.add_argument(
        "--stage-cpus", type=number_at_least(0.01),
        help="with --executor ray: CPUs per evaluation or diagnostics stage (default 1; more than 2 also gives "
        "an evaluation that many env workers)",
    )  # fmt: skip


def executor_of(args: argparse.Namespace) -> RayExecutor | None:
    """The executor the command line asks for: None for the local scheduler (where the Ray options are
    refused in one line), else a ``RayExecutor``."""
    ray_options = {"--address": args.address, "--fit-gpus": args.fit_gpus, "--fit-cpus": args.fit_cpus,
                   "--stage-cpus": args.stage_cpus}  # fmt: skip
    if args.executor == "local":
        given = [flag for flag, value in ray_options.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]}: only with --executor ray")
        return None
    require_ray()  # refused in one line before any work when Ray is not installed
    return RayExecutor(args.address, args.fit_gpus, args.fit_cpus or 1.0, args.stage_cpus or 1.0, args.jobs)


@dataclass(frozen=True)
class RayExecutor:
    """Where and with what a comparison's stages run on a Ray cluster."""

    address: str | None = None  # ray.init's address (None: RAY_ADDRESS, a `ray start` cluster here, or a new one)
    fit_gpus: float | None = None  # None: 1 when the cluster has GPUs, else 0
    fit_cpus: float = 1.0
    stage_cpus: float = 1.0
    jobs: int | None = None  # stages submitted at once (None: every ready one)
    launch: Launcher | None = None  # how a task starts its command (None: subprocess.Popen); tests give fakes

    def __post_init__(self) -> None:
        for name in ("fit_cpus", "stage_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        if self.fit_gpus is not None and self.fit_gpus < 0:
            raise ValueError(f"fit_gpus={self.fit_gpus}: must be >= 0")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs={self.jobs}: must be >= 1")

    def prepare(self, out: Path) -> Path:
        """Connect to the cluster; ``out`` (an existing folder) as an absolute path, refused in one line unless
        every node can write it and sees what this process writes there."""
        connect(self.address)
        out = out.resolve()
        check_shared_folder(out, "--out")
        return out

    def stage_layout(self) -> tuple[int, int]:
        """(workers, jobs) for ``compare.plan``: each evaluation has its own ``stage_cpus`` CPUs."""
        return max(1, int(self.stage_cpus)), 1

    def scheduler(self, log_dir: Path, total: int | None = None) -> RayScheduler:
        return RayScheduler(self, log_dir, total)


class StageBoard:
    """A Ray actor: the stages whose task has started on a node (the driver tells running from queued by it)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def start(self, key: str) -> None:
        self.keys.append(key)

    def started(self) -> list[str]:
        return list(self.keys)


def wait_for(process: Process) -> int:
    """The exit code of a started stage, waiting in short steps (a cancelled task's KeyboardInterrupt gets in)."""
    if isinstance(process, subprocess.Popen):
        while True:
            try:
                return process.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                continue
    while (code := process.poll()) is None:
        time.sleep(0.05)
    return code


def run_stage(
    command: list[str | None], log: str, threads: int, cwd: str, board: Any, key: str, launch: Launcher | None
) -> tuple[int, str, float]:
    """In a Ray worker: run a stage's command (``None`` first: this node's Python) with ``threads`` threads per
    math library, its output in ``log``; (exit code, this node's address, seconds it ran). Cancelled, it stops
    the command."""
    import ray

    ray.get(board.start.remote(key))  # before the command: the driver's counts are never behind
    start = time.perf_counter()
    argv = [sys.executable if part is None else part for part in command]
    env = {**os.environ, **{name: str(threads) for name in THREAD_COUNT_VARIABLES}}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        if launch is None:  # the driver's working folder when this node has it: relative paths in arguments
            folder = cwd if os.path.isdir(cwd) else None
            process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=folder)
        else:
            process = launch(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
        try:
            code = wait_for(process)
        except BaseException:
            if isinstance(process, subprocess.Popen):
                process.terminate()
                try:
                    process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
            raise
    return code, ray.util.get_node_ip_address(), time.perf_counter() - start


def generate_here(argv: list[str]) -> None:
    """A comparison's generation stage, spread over the cluster from this process (``robocds-generate ...
    --executor ray``); Ctrl-C stops the comparison."""
    from robocds.datasets.generate import main

    if main([*argv, "--executor", "ray"]):
        raise KeyboardInterrupt  # main returns non-zero only when interrupted


def stage_module(step: Step) -> str | None:
    """The module a ``python -m <module>`` stage runs."""
    command = step.command
    return command[2] if len(command) > 2 and command[1] == "-m" else None


class RayStage:
    """A stage submitted as a Ray task: what the ``Scheduler`` holds for a running command."""

    def __init__(self, ray: Any, ref: Any) -> None:
        self.ray, self.ref = ray, ref
        self.code: int | None = None
        self.node = ""  # where it ran
        self.seconds = 0.0  # how long it ran there
        self.error = ""  # why its task ended without an exit code

    def poll(self) -> int | None:
        if self.code is None and self.ray.wait([self.ref], timeout=0)[0]:
            self.collect()
        return self.code

    def collect(self) -> None:
        """Its exit code (and node) from its finished task."""
        try:
            self.code, self.node, self.seconds = self.ray.get(self.ref)
        except self.ray.exceptions.RayError as error:
            self.code, self.error = TASK_LOST, describe_ray_error(error)


class RayScheduler(Scheduler):
    """The local ``Scheduler`` with every command submitted as a Ray task (see the module docstring)."""

    def __init__(self, executor: RayExecutor, log_dir: Path, total: int | None = None) -> None:
        super().__init__(executor.jobs or UNLIMITED, log_dir, total=total, poll_seconds=WAIT_SECONDS)
        self.executor, self.ray = executor, require_ray()
        has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
        self.fit_gpus = executor.fit_gpus if executor.fit_gpus is not None else float(has_gpus)
        self.task = self.ray.remote(run_stage)
        self.board: Any = None  # the StageBoard actor, made at the first submission
        self.submitted: dict[str, RayStage] = {}  # stages submitted whose end is not reported yet

    def log_path(self, step: Step) -> Path:
        return self.log_dir / f"{step.key}.log"  # the terminal is not the node's

    def resources(self, step: Step) -> dict[str, float]:
        if stage_module(step) == FIT_MODULE:
            return {"num_cpus": self.executor.fit_cpus, "num_gpus": self.fit_gpus}
        return {"num_cpus": self.executor.stage_cpus}

    def run(self, steps: Sequence[Step]) -> None:
        spread = [
            dataclasses.replace(step, command=(), action=functools.partial(generate_here, list(step.command[3:])))
            if stage_module(step) == GENERATE_MODULE
            else step
            for step in steps
        ]
        try:
            super().run(spread)
        except BaseException:  # Ctrl-C, or a stage's prepare failing: stop what still runs
            self.cancel()
            raise

    def cancel(self) -> None:
        """Cancel every submitted stage still running (each stops its command) and wait a moment for them."""
        refs = [stage.ref for stage in self.submitted.values() if stage.code is None]
        for ref in refs:
            self.ray.cancel(ref)
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 5)

    def _launch(self, step: Step, log: Path | None) -> tuple[Process, IO[Any] | None]:
        if self.board is None:
            self.board = self.ray.remote(num_cpus=0)(StageBoard).remote()
        resources = self.resources(step)
        command = [None if i == 0 and part == sys.executable else part for i, part in enumerate(step.command)]
        task = self.task.options(**resources, max_retries=0, name=step.key)
        threads = max(1, int(resources["num_cpus"]))
        ref = task.remote(command, str(log), threads, os.getcwd(), self.board, step.key, self.executor.launch)
        self.submitted[step.key] = stage = RayStage(self.ray, ref)
        return stage, None

    def _wait(self, running: dict[str, tuple[Step, Process, Any, float]]) -> list[tuple[str, int]]:
        refs = {process.ref: key for key, (_, process, _, _) in running.items()}
        while not self.ray.wait(list(refs), num_returns=1, timeout=self.poll_seconds)[0]:
            pass
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        ended = []
        for ref in ready:
            stage = running[refs[ref]][1]
            stage.collect()
            ended.append((refs[ref], stage.code))
        return ended

    def _ended(self, step: Step, code: int, seconds: float) -> None:
        stage = self.submitted.pop(step.key)
        started = set(self.ray.get(self.board.started.remote()))
        live = [key for key, other in self.submitted.items() if other.code is None]
        running = sum(key in started for key in live)
        counts = f"cluster: {running} running, {len(live) - running} queued, {self.finished} done"
        if code == 0:
            ran = f"{stage.seconds / 60:.1f} min on {stage.node}, {(seconds - stage.seconds) / 60:.1f} min queued"
            self.progress(f"done: {step.title} ({ran}) | {counts}")
        else:
            self.progress(f"FAILED: {step.title} ({stage.error or f'exit code {code}'}) | {counts}")
