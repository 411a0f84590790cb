"""Environment worker processes for batched rollouts.

Each worker owns one env per task it has been asked for and plays one episode at a time. The main
process sends ``reset``/``step`` commands to all workers, then collects the replies, so the envs
step in parallel while the policy acts on the whole batch at once. A worker never dies of an
episode's error: it replies ``("error", reason)``, drops that env, and builds a fresh one next time.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Any

from robocds.envs.env import ManipulationEnv
from robocds.envs.tasks import ScriptedOracle, get_task

ORACLE_ACTION = None  # a step command with this action asks the worker's scripted oracle to act


@dataclass(frozen=True)
class EnvSettings:
    """How every worker builds its envs."""

    image_size: int = 64  # camera resolution (pixels)
    max_steps: int = 40  # horizon
    renderer: str = "tiny"  # "tiny" (CPU) or "egl"


class _EpisodeRunner:
    """The worker-side state machine, shared by subprocess and in-process workers."""

    def __init__(self, settings: EnvSettings) -> None:
        self.settings = settings
        self.envs: dict[str, ManipulationEnv] = {}
        self.task: str | None = None
        self.oracle: ScriptedOracle | None = None

    def handle(self, message: tuple) -> tuple[str, Any]:
        command = message[0]
        try:
            if command == "reset":
                _, task, seed = message
                self.task = task
                env = self.envs.get(task)
                if env is None:
                    s = self.settings
                    env = self.envs[task] = ManipulationEnv(task, s.image_size, s.max_steps, s.renderer)
                obs, _ = env.reset(seed=seed)
                # Seeded by the episode, so oracle noise is reproducible whichever worker plays it.
                self.oracle = ScriptedOracle(get_task(task), seed=seed)
                self.oracle.reset()
                return "ok", obs
            if command == "step":
                env = self.envs[self.task]
                action = message[1]
                if action is ORACLE_ACTION:
                    action = self.oracle.act(env)
                obs, reward, terminated, truncated, _ = env.step(action)
                return "ok", (obs, reward, terminated, truncated)
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


def _worker_main(conn, settings: EnvSettings) -> None:
    runner = _EpisodeRunner(settings)
    try:
        while True:
            message = conn.recv()
            if message[0] == "close":
                break
            conn.send(runner.handle(message))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        runner.close()


class _LocalWorker:
    """Same interface as a process worker, run in this process (``workers=0``; handy for tests)."""

    def __init__(self, settings: EnvSettings) -> None:
        self.runner = _EpisodeRunner(settings)
        self.reply: tuple[str, Any] | None = None

    def send(self, message: tuple) -> None:
        self.reply = self.runner.handle(message)

    def recv(self) -> tuple[str, Any]:
        reply, self.reply = self.reply, None
        return reply

    def close(self) -> None:
        self.runner.close()


class _ProcessWorker:
    def __init__(self, settings: EnvSettings, context) -> None:
        self.settings, self.context = settings, context
        self._start()

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker_main, args=(child, self.settings), daemon=True)
        self.process.start()
        child.close()

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            self._pending_crash = True

    def recv(self) -> tuple[str, Any]:
        if getattr(self, "_pending_crash", False):
            return self._restart()
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return self._restart()

    def _restart(self) -> tuple[str, Any]:
        code = self.process.exitcode
        self.process.join(timeout=1)
        self._pending_crash = False
        self._start()
        return "error", f"worker process died (exit code {code})"

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


class WorkerPool:
    """``num_workers`` env workers (0: one worker in this process)."""

    def __init__(self, num_workers: int, settings: EnvSettings = EnvSettings()) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0")
        if num_workers == 0:
            self.workers = [_LocalWorker(settings)]
        else:
            # spawn: a forked copy of a process holding torch or pybullet state is not safe.
            context = mp.get_context("spawn")
            self.workers = [_ProcessWorker(settings, context) for _ in range(num_workers)]

    def __len__(self) -> int:
        return len(self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
