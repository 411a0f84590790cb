"""The comparison's stage scheduler on fake plans: order, concurrency, skipping, failure, logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robocds.pipeline.stages import Scheduler, Step, check_plan


class FakeProcess:
    """A launched stage that ends after ``polls`` polls, writing its output (unless it fails)."""

    def __init__(self, world: FakeWorld, step: Step, code: int, polls: int) -> None:
        self.world, self.step, self.code, self.polls = world, step, code, polls

    def poll(self) -> int | None:
        self.polls -= 1
        if self.polls > 0:
            return None
        if self in self.world.running:
            self.world.running.remove(self)
            self.world.ended.append(self.step.key)
            if self.code == 0 and not self.step.marker:
                self.step.output.write_text("done")
        return self.code


class FakeWorld:
    """A launcher that records which stages ran, in which order, and how many at once."""

    def __init__(self, steps: list[Step], failing: tuple[str, ...] = (), polls: dict[str, int] | None = None):
        self.by_command = {step.command: step for step in steps}
        self.failing, self.polls = failing, polls or {}
        self.running: list[FakeProcess] = []
        self.started: list[str] = []
        self.ended: list[str] = []
        self.most_at_once = 0
        self.envs: list[dict | None] = []

    def launch(self, command, env=None, stdout=None, stderr=None) -> FakeProcess:
        step = self.by_command[tuple(command)]
        for key in step.after:  # a stage never starts before the stages it comes after have ended
            assert key in self.ended, f"{step.key} started before {key} ended"
        if stdout is not None:
            stdout.write(f"output of {step.key}\n")
        self.started.append(step.key)
        self.envs.append(env)
        process = FakeProcess(self, step, 3 if step.key in self.failing else 0, self.polls.get(step.key, 2))
        self.running.append(process)
        self.most_at_once = max(self.most_at_once, len(self.running))
        return process


def comparison_plan(root: Path) -> list[Step]:
    """generate -> (train a -> eval a, analyse a), (train b -> eval b), and a reference after generate."""

    def step(key: str, *after: str, marker: bool = False) -> Step:
        return Step(key, f"stage {key}", root / key, ("run", key), marker=marker, after=after)

    return [
        step("generate"),
        step("reference", "generate"),
        step("train-a", "generate", marker=True),
        step("eval-a", "train-a"),
        step("analyse-a", "train-a"),
        step("train-b", "generate", marker=True),
        step("eval-b", "train-b"),
    ]


def test_two_jobs_run_two_stages_at_once_in_dependency_and_plan_order(tmp_path, capsys):
    steps = comparison_plan(tmp_path)
    world = FakeWorld(steps, polls={"train-a": 4, "train-b": 8})
    Scheduler(2, tmp_path / "logs", env={"OMP_NUM_THREADS": "1"}, launch=world.launch, poll_seconds=0).run(steps)
    assert world.started == ["generate", "reference", "train-a", "train-b", "eval-a", "analyse-a", "eval-b"]
    assert world.most_at_once == 2
    assert all(step.output.exists() for step in steps)  # markers touched, outputs written
    assert world.envs == [{"OMP_NUM_THREADS": "1"}] * len(steps)
    assert (tmp_path / "logs" / "eval-a.log").read_text() == "output of eval-a\n"
    out = capsys.readouterr().out
    assert "[1/7 |" in out and "(log: " in out and "done: stage eval-b" in out


def test_one_job_runs_the_plan_in_order_without_logs(tmp_path):
    steps = comparison_plan(tmp_path)
    world = FakeWorld(steps)
    Scheduler(1, launch=world.launch, poll_seconds=0).run(steps)
    assert world.started == [step.key for step in steps] and world.most_at_once == 1
    assert not (tmp_path / "logs").exists()


def test_stages_whose_output_exists_are_skipped(tmp_path, capsys):
    steps = comparison_plan(tmp_path)
    world = FakeWorld(steps)
    for key in ("generate", "train-a", "eval-a"):
        (tmp_path / key).write_text("earlier run")
        world.ended.append(key)  # by an earlier comparison
    Scheduler(2, tmp_path / "logs", launch=world.launch, poll_seconds=0).run(steps)
    assert world.started == ["reference", "analyse-a", "train-b", "eval-b"]
    assert capsys.readouterr().out.count("already done") == 3


def test_a_failure_stops_new_stages_lets_running_ones_finish_and_shows_the_log(tmp_path, capsys):
    steps = comparison_plan(tmp_path)
    world = FakeWorld(steps, failing=("train-a",), polls={"reference": 1, "train-a": 4, "train-b": 8})
    scheduler = Scheduler(2, tmp_path / "logs", launch=world.launch, poll_seconds=0)
    with pytest.raises(subprocess.CalledProcessError) as info:
        scheduler.run(steps)
    assert info.value.returncode == 3 and info.value.cmd == ["run", "train-a"]
    assert "train-b" in world.ended and (tmp_path / "train-b").exists()  # the running stage was let finish
    assert "eval-a" not in world.started and "eval-b" not in world.started  # nothing new after the failure
    assert not (tmp_path / "train-a").exists()  # a failed stage's marker is not touched
    captured = capsys.readouterr()
    assert "output of train-a" in captured.err and "FAILED: stage train-a (exit code 3)" in captured.out


def test_a_real_command_that_does_not_write_its_output_is_an_error(tmp_path):
    never = Step("never", "third", tmp_path / "never", (sys.executable, "-c", "pass"))
    marker = Step("marker", "second", tmp_path / "marker", (sys.executable, "-c", "pass"), marker=True)
    Scheduler(1, poll_seconds=0.05).run([marker])
    assert marker.output.exists()
    with pytest.raises(RuntimeError, match="third: finished but .*never is missing"):
        Scheduler(1, poll_seconds=0.05).run([never])


def test_bad_plans_are_refused_by_name(tmp_path):
    a = Step("a", "a", tmp_path / "a", ("a",))
    with pytest.raises(ValueError, match="'b' comes after \\['c'\\], which are not earlier"):
        check_plan([a, Step("b", "b", tmp_path / "b", ("b",), after=("c",))])
    with pytest.raises(ValueError, match="'a' appears twice"):
        check_plan([a, a])
    with pytest.raises(ValueError, match="key='x/y'"):
        Step("x/y", "x", tmp_path, ("x",))
    with pytest.raises(ValueError, match="jobs=2: concurrent stages need a log_dir"):
        Scheduler(2)


def test_an_action_runs_in_this_process_after_its_stages_and_a_failing_one_stops_the_plan(tmp_path):
    steps, seen = comparison_plan(tmp_path), []

    def record() -> None:
        seen.extend(world.ended)
        (tmp_path / "record-a").write_text("recorded")

    steps.append(Step("record-a", "record a", tmp_path / "record-a", action=record, after=("eval-a", "analyse-a")))
    world = FakeWorld(steps)
    Scheduler(2, tmp_path / "logs", launch=world.launch, poll_seconds=0).run(steps)
    assert "record-a" not in world.started and {"eval-a", "analyse-a"} <= set(seen)

    def broken() -> None:
        raise OSError("disk full")

    (tmp_path / "again").mkdir()
    steps = comparison_plan(tmp_path / "again")
    steps.insert(4, Step("record-a", "record a", tmp_path / "again" / "record-a", action=broken, after=("eval-a",)))
    world = FakeWorld(steps)
    with pytest.raises(OSError, match="disk full"):
        Scheduler(1, launch=world.launch, poll_seconds=0).run(steps)
    assert world.started == ["generate", "reference", "train-a", "eval-a"]  # nothing new after the failure
    with pytest.raises(ValueError, match="'x': needs a command or an action, and not both"):
        Step("x", "x", tmp_path)
