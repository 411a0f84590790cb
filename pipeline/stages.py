"""Run a comparison's stages: commands with an output each, in dependency order, up to ``jobs`` at a time.

A stage whose output already exists is skipped, so an interrupted comparison resumes where it
stopped. A stage starts once every stage it comes ``after`` is done; among the stages ready to start,
the first in plan order goes first (so a run's evaluation starts as soon as its training is done,
before the next training). With one job a stage's output goes to the terminal as it always did;
with more, each stage writes ``<log_dir>/<key>.log`` (two progress bars on one terminal are
unreadable) and a failed stage's last lines are printed. After a failure no new stage starts; the
running ones are let finish (their outputs are kept for the resume), then the failure is raised as
``subprocess.CalledProcessError``. A stage may also be an ``action``: quick bookkeeping run in this process
when its stages are done (writing a finished run's record); an action that fails is raised as it is.
``robocds.pipeline.ray_executor.RayScheduler`` is this loop with its commands run as Ray tasks on a cluster: it
replaces how a command starts (``_launch``), how the scheduler waits for one (``_wait``) and the line printed when
one ends (``_ended``); the order, the skipping and the failure rules are these.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

LOG_TAIL_LINES = 20  # lines of a failed stage's log printed with its error


@dataclass(frozen=True)
class Step:
    """One stage: ``command`` (or ``action``) makes ``output`` (or, with ``marker``, ``output`` is touched when it
    succeeds)."""

    key: str  # unique within a plan; names the stage's log file
    title: str  # what the progress line says
    output: Path  # exists: the stage is done
    command: tuple[str, ...] = ()
    marker: bool = False
    after: tuple[str, ...] = ()  # keys of the stages that must be done first (earlier in the plan)
    prepare: Callable[[], None] | None = None  # called just before the command starts
    # Instead of a command: quick bookkeeping run in this process (such as writing a finished run's record).
    action: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not self.key or "/" in self.key:
            raise ValueError(f"key={self.key!r}: must be a non-empty name without '/'")
        if self.key in self.after:
            raise ValueError(f"step {self.key!r} cannot come after itself")
        if bool(self.command) == (self.action is not None):
            raise ValueError(f"step {self.key!r}: needs a command or an action, and not both")


class Process(Protocol):
    """What the scheduler needs of a started command (``subprocess.Popen`` has it)."""

    def poll(self) -> int | None: ...


Launcher = Callable[..., Process]  # launch(command, stdout=..., stderr=..., env=...)


def check_plan(steps: Sequence[Step]) -> None:
    """Keys are unique and every ``after`` names an earlier step (so the plan has no cycle)."""
    seen: set[str] = set()
    for step in steps:
        if step.key in seen:
            raise ValueError(f"step {step.key!r} appears twice in the plan")
        unknown = [key for key in step.after if key not in seen]
        if unknown:
            raise ValueError(f"step {step.key!r} comes after {unknown}, which are not earlier in the plan")
        seen.add(step.key)


class Scheduler:
    """Runs a plan of ``Step`` with up to ``jobs`` commands at once (see the module docstring)."""

    def __init__(
        self,
        jobs: int = 1,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        launch: Launcher = subprocess.Popen,
        poll_seconds: float = 0.5,
        total: int | None = None,
    ) -> None:
        """``total``: stages counted in the progress lines over every ``run`` (default: the first plan's)."""
        if jobs < 1:
            raise ValueError(f"jobs={jobs}: must be >= 1")
        if jobs > 1 and log_dir is None:
            raise ValueError(f"jobs={jobs}: concurrent stages need a log_dir for their output")
        self.jobs, self.log_dir, self.env, self.launch, self.poll_seconds = jobs, log_dir, env, launch, poll_seconds
        self.start, self.total, self.finished = time.perf_counter(), total, 0

    def progress(self, text: str, number: int | None = None) -> None:
        """A progress line: ``[stage/total | minutes] text``."""
        elapsed = (time.perf_counter() - self.start) / 60
        print(f"[{self.finished if number is None else number}/{self.total} | {elapsed:5.1f} min] {text}", flush=True)

    def log_path(self, step: Step) -> Path | None:
        return None if self.jobs == 1 else self.log_dir / f"{step.key}.log"

    def _start(self, step: Step) -> tuple[Process, IO[Any] | None]:
        if step.prepare is not None:
            step.prepare()
        return self._launch(step, self.log_path(step))

    def _launch(self, step: Step, log: Path | None) -> tuple[Process, IO[Any] | None]:
        """Start ``step``'s command (its output to ``log``, or to the terminal); the process and the open log."""
        if log is None:
            return self.launch(list(step.command), env=self.env), None
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "w")  # noqa: SIM115 - closed when the stage ends
        return self.launch(list(step.command), stdout=handle, stderr=subprocess.STDOUT, env=self.env), handle

    def _finish(self, step: Step, code: int) -> None:
        if code != 0:
            log = self.log_path(step)
            if log is not None and log.is_file():
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                print(f"--- last lines of {log} ---", *tail, "---", sep="\n", file=sys.stderr, flush=True)
            return
        if step.marker:
            step.output.touch()
        if not step.output.exists():
            raise RuntimeError(f"{step.title}: finished but {step.output} is missing")

    def run(self, steps: Sequence[Step]) -> None:
        """Run every step of ``steps`` not already done; raise the first failure once nothing runs."""
        check_plan(steps)
        self.total = self.total or len(steps)
        pending, done = list(steps), set()
        running: dict[str, tuple[Step, Process, IO[Any] | None, float]] = {}
        failure: Exception | None = None
        while pending or running:
            while failure is None and len(running) < self.jobs:
                ready = next((s for s in pending if all(key in done for key in s.after)), None)
                if ready is None:
                    break
                pending.remove(ready)
                if ready.output.exists():
                    self.finished += 1
                    done.add(ready.key)
                    self.progress(f"{ready.title}: already done ({ready.output})")
                    continue
                if ready.action is not None:
                    self.progress(ready.title, self.finished + len(running) + 1)
                    failure = self._act(ready)
                    self.finished += 1
                    if failure is None:
                        done.add(ready.key)
                    continue
                log = self.log_path(ready)
                self.progress(ready.title + (f" (log: {log})" if log else ""), self.finished + len(running) + 1)
                running[ready.key] = (ready, *self._start(ready), time.perf_counter())
            if not running:
                break  # a failure stopped the plan (a valid plan always has a ready step otherwise)
            ended = self._wait(running)
            for key, code in ended:
                step, _, handle, started = running.pop(key)
                if handle is not None:
                    handle.close()
                self._finish(step, code)
                self.finished += 1
                self._ended(step, code, time.perf_counter() - started)
                if code != 0:
                    failure = failure or subprocess.CalledProcessError(code, list(step.command))
                    continue
                done.add(key)
        if failure is not None:
            raise failure

    def _ended(self, step: Step, code: int, seconds: float) -> None:
        """The progress line of a command that ended with ``code`` after ``seconds``."""
        if code != 0:
            self.progress(f"FAILED: {step.title} (exit code {code})")
        elif self.jobs > 1:
            self.progress(f"done: {step.title} ({seconds / 60:.1f} min)")

    def _act(self, step: Step) -> Exception | None:
        """Run ``step``'s action; its exception (raised once nothing runs), or None when it made its output."""
        try:
            step.action()
            self._finish(step, 0)
        except Exception as error:  # re-raised by ``run`` once the running stages have ended
            self.progress(f"FAILED: {step.title} ({type(error).__name__})")
            return error
        return None

    def _wait(self, running: Mapping[str, tuple[Step, Process, Any, float]]) -> list[tuple[str, int]]:
        """Block until at least one running command has ended; their (key, exit code)."""
        while True:
            ended = [(key, code) for key, (_, process, _, _) in running.items() if (code := process.poll()) is not None]
            if ended:
                return ended
            time.sleep(self.poll_seconds)
