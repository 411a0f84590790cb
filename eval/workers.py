"""Environment worker processes for batched rollouts.

Each worker hosts ``envs_per_worker`` episode slots (each slot owns one env per task it has been
asked for and plays one episode at a time). The main process sends every worker one batch of
``reset``/``step`` commands for its slots, then collects the replies, so workers step in parallel
while the policy acts on all slots in one batch; several slots per worker keep the cores busy while
the policy runs. A worker never dies of an episode's error: that slot replies ``("error", reason)``,
drops its env, and builds a fresh one next time.

Commands: ``("reset", task, seed, record)`` replies ``("ok", (obs, view))`` and ``("step", action)`` replies
``("ok", (obs, reward, terminated, truncated, view))``, where ``view`` is the viewer camera's frame
(``ManipulationEnv.render``) when the episode is recorded, else None: only recorded episodes pay for it.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from robocds.envs.env import ManipulationEnv
from robocds.envs.suite import EnvSettings
from robocds.envs.tasks import ScriptedOracle, get_task
from robocds.threads import worker_thread_environment

ORACLE_ACTION = None  # a step command with this action asks the worker's scripted oracle to act

__all__ = ["ORACLE_ACTION", "EnvSettings", "WorkerPool"]


class _EpisodeRunner:
    """The worker-side state machine, shared by subprocess and in-process workers."""

    def __init__(self, settings: EnvSettings) -> None:
        self.settings = settings
        self.envs: dict[str, ManipulationEnv] = {}
        self.task: str | None = None
        self.oracle: ScriptedOracle | None = None
        self.record = False

    def handle(self, message: tuple) -> tuple[str, Any]:
        command = message[0]
        try:
            if command == "reset":
                _, task, seed, self.record = message
                self.task = task
                env = self.envs.get(task)
                if env is None:
                    env = self.envs[task] = ManipulationEnv.from_settings(task, self.settings, render_mode="rgb_array")
                obs, _ = env.reset(seed=seed)
                # Seeded by the episode, so oracle noise is reproducible whichever worker plays it.
                self.oracle = ScriptedOracle(get_task(task), seed=seed)
                self.oracle.reset()
                return "ok", (obs, env.render() if self.record else None)
            if command == "step":
                env = self.envs[self.task]
                action = message[1]
                if action is ORACLE_ACTION:
                    action = self.oracle.act(env)
                obs, reward, terminated, truncated, _ = env.step(action)
                return "ok", (obs, reward, terminated, truncated, env.render() if self.record else None)
            raise ValueError(f"unknown worker command {command!r}")
        except Exception as error:  # noqa: BLE001 - any failure ends only this episode
            self._drop_current_env()
            return "error", f"{type(error).__name__}: {error}"

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()

    def _drop_current_env(self) -> None:
        env = self.envs.pop(self.task, None) if self.task is not None else None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - a broken client may fail to close; it is dropped anyway
                pass


Batch = list[tuple[int, tuple]]  # (slot within the worker, command) pairs


def _handle_batch(runners: list[_EpisodeRunner], batch: Batch) -> list[tuple[str, Any]]:
    return [runners[slot].handle(message) for slot, message in batch]


def _worker_main(conn, settings: EnvSettings, envs_per_worker: int) -> None:
    runners = [_EpisodeRunner(settings) for _ in range(envs_per_worker)]
    try:
        while True:
            batch = conn.recv()
            if batch == "close":
                break
            conn.send(_handle_batch(runners, batch))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        for runner in runners:
            runner.close()


class _LocalWorker:
    """Same interface as a process worker, run in this process (``workers=0``; handy for tests)."""

    def __init__(self, settings: EnvSettings, envs_per_worker: int) -> None:
        self.runners = [_EpisodeRunner(settings) for _ in range(envs_per_worker)]
        self.replies: list[tuple[str, Any]] = []

    def send(self, batch: Batch) -> None:
        self.replies = _handle_batch(self.runners, batch)

    def recv(self) -> list[tuple[str, Any]]:
        replies, self.replies = self.replies, []
        return replies

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


class _ProcessWorker:
    def __init__(self, settings: EnvSettings, envs_per_worker: int, context) -> None:
        self.settings, self.envs_per_worker, self.context = settings, envs_per_worker, context
        self.pending = 0
        self.crashed = False
        self._start()

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        args = (child, self.settings, self.envs_per_worker)
        self.process = self.context.Process(target=_worker_main, args=args, daemon=True)
        with worker_thread_environment():  # the spawned interpreter loads torch/numpy with 1 thread each
            self.process.start()
        child.close()

    def send(self, batch: Batch) -> None:
        self.pending = len(batch)
        try:
            self.conn.send(batch)
        except (BrokenPipeError, OSError):
            self.crashed = True

    def recv(self) -> list[tuple[str, Any]]:
        if not self.crashed:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        # The process died: every episode it was playing fails, and a fresh process takes its place.
        code = self.process.exitcode
        self.process.join(timeout=1)
        self.crashed = False
        self._start()
        return [("error", f"worker process died (exit code {code})")] * self.pending

    def close(self) -> None:
        try:
            self.conn.send("close")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


class WorkerPool:
    """``num_workers`` env workers (0: one worker in this process), each with ``envs_per_worker`` slots.

    Slots are numbered 0 .. ``len(pool) - 1``; ``exchange`` sends each slot's command and returns
    each slot's reply.
    """

    def __init__(self, num_workers: int, settings: EnvSettings = EnvSettings(), envs_per_worker: int = 1) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0")
        if envs_per_worker < 1:
            raise ValueError(f"envs_per_worker={envs_per_worker}: must be >= 1")
        self.envs_per_worker = envs_per_worker
        if num_workers == 0:
            self.workers = [_LocalWorker(settings, envs_per_worker)]
        else:
            # spawn: a forked copy of a process holding torch or pybullet state is not safe.
            context = mp.get_context("spawn")
            self.workers = [_ProcessWorker(settings, envs_per_worker, context) for _ in range(num_workers)]

    def __len__(self) -> int:
        return len(self.workers) * self.envs_per_worker

    def exchange(self, commands: dict[int, tuple]) -> dict[int, tuple[str, Any]]:
        """Send ``{slot: command}`` (all workers first, so they run in parallel); ``{slot: reply}``."""
        batches: dict[int, Batch] = {}
        for slot, message in commands.items():
            batches.setdefault(slot // self.envs_per_worker, []).append((slot % self.envs_per_worker, message))
        for worker, batch in batches.items():
            self.workers[worker].send(batch)
        replies = {}
        for worker, batch in batches.items():
            for (local, _), reply in zip(batch, self.workers[worker].recv()):
                replies[worker * self.envs_per_worker + local] = reply
        return replies

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
