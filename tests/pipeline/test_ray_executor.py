"""robocds-compare --executor ray on a local Ray instance of 2 CPUs (``ray_local``; skipped without Ray, the
ray extra): the local scheduler's report, a stage killed mid-way resumed, a failing stage's own error line;
the command line's refusals and the folder probe need no Ray."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import REPS, TRAIN_ARGS, FakeStages, report_files, study_of

from robocds.datasets.cluster import probe_folder
from robocds.errors import ConfigError
from robocds.pipeline.compare import main, run_comparison
from robocds.pipeline.ray_executor import TASK_LOST, RayExecutor, RayScheduler
from robocds.pipeline.stages import Step

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray (the ray extra)")


@pytest.fixture
def ray_fakes(ray_local, sharing_run):
    """``ray_local``, where the fake stage launchers of test_store (and the sharing-log writer they call) are
    shipped to the workers by value: the workers cannot import the test modules."""
    for module in {sys.modules[FakeStages.__module__], sys.modules[sharing_run.__module__]}:
        ray_local.cloudpickle.register_pickle_by_value(module)
    return ray_local


def python(tmp_path: Path, key: str, code: str, *after: str, prepare=None) -> Step:
    """A stage running ``code`` (``out``: its output path) in a fresh interpreter."""
    out = tmp_path / key
    script = f"import os, signal, sys, time\nfrom pathlib import Path\nout = Path({str(out)!r})\n{code}"
    return Step(key, f"stage {key}", out, (sys.executable, "-c", script), after=after, prepare=prepare)


@needs_ray
def test_a_comparison_on_ray_gives_the_local_schedulers_report(tmp_path, tiny_root, sharing_run, ray_fakes, capsys):
    scale, study = study_of(tmp_path / "local-store", [0])
    local = FakeStages(tiny_root, sharing_run)
    run_comparison(scale, tmp_path / "local", 0, list(TRAIN_ARGS), reps=REPS, study=study, launch=local)
    scale, study = study_of(tmp_path / "ray-store", [0])
    executor = RayExecutor(launch=FakeStages(tiny_root, sharing_run))  # a fake command in each Ray task
    run_comparison(scale, tmp_path / "ray", 0, list(TRAIN_ARGS), reps=REPS, study=study, executor=executor)
    # The dataset was generated for real, one Ray task per shard: the bytes of a local generation.
    assert report_files(tmp_path / "ray" / "data") == report_files(tiny_root)
    reported = report_files(tmp_path / "ray" / "report")
    assert reported == report_files(tmp_path / "local" / "report") and "sharing/cds.png" in reported
    assert {path.name for path in (tmp_path / "ray-store" / "runs").iterdir()} == {"cds-seed0", "no_sharing-seed0"}
    lines = [line for line in capsys.readouterr().out.splitlines() if " | cluster: " in line]
    assert len(lines) == 7  # a line per finished command: the random policy, 2 x (train, evaluate, analyse)
    assert any("done: train cds, seed 0 (" in line for line in lines)
    assert re.search(r"\| cluster: 0 running, 0 queued, \d+ done$", lines[-1])
    assert not list((tmp_path / "ray").glob(".robocds-probe-*"))  # the folder probe left nothing behind


@needs_ray
def test_a_stage_killed_mid_way_is_run_again_and_the_finished_ones_are_not(tmp_path, ray_local, capsys):
    flag = tmp_path / "killed-once"

    def clear_partial() -> None:  # like clear_interrupted_run: runs in this process before the stage starts
        (tmp_path / "b.partial").unlink(missing_ok=True)

    kill_once = (f"if not Path({str(flag)!r}).exists():\n"
                 f"    Path({str(flag)!r}).touch(); Path({str(tmp_path / 'b.partial')!r}).touch()\n"
                 "    os.kill(os.getpid(), signal.SIGKILL)\n"
                 "out.write_text('b')")  # fmt: skip
    steps = [
        python(tmp_path, "a", "out.write_text('a')"),
        python(tmp_path, "b", kill_once, "a", prepare=clear_partial),
        python(tmp_path, "c", "out.write_text('c')", "b"),
        python(tmp_path, "d", "time.sleep(1); out.write_text('d')", "a"),  # runs beside b: let finish
    ]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        RayScheduler(RayExecutor(), tmp_path / "logs").run(steps)
    assert failed.value.returncode == -9 and (tmp_path / "b.partial").exists()
    assert [step.output.exists() for step in steps] == [True, False, False, True]  # c never started
    assert not (tmp_path / "logs" / "c.log").exists()
    assert "FAILED: stage b (exit code -9) | cluster: " in capsys.readouterr().out

    RayScheduler(RayExecutor(), tmp_path / "logs").run(steps)  # the same plan again: resumed
    out = capsys.readouterr().out
    assert out.count("already done") == 2 and "done: stage b" in out and "done: stage c" in out
    assert [step.output.read_text() for step in steps] == ["a", "b", "c", "d"]
    assert not (tmp_path / "b.partial").exists()  # the stage's prepare ran before it was submitted again


@needs_ray
def test_a_stage_whose_ray_worker_dies_fails_with_rays_reason_and_runs_again(tmp_path, ray_local, capsys):
    flag = str(tmp_path / "lost-once")
    once = f"if not Path({flag!r}).exists():\n    Path({flag!r}).touch(); os.kill(os.getppid(), 9); os._exit(9)\n"
    steps = [python(tmp_path, "a", once + "out.write_text('a')")]  # the first time, it kills the task's worker
    with pytest.raises(subprocess.CalledProcessError) as failed:
        RayScheduler(RayExecutor(), tmp_path / "logs").run(steps)
    assert failed.value.returncode == TASK_LOST and not steps[0].output.exists()
    assert "FAILED: stage a (WorkerCrashedError: " in capsys.readouterr().out
    RayScheduler(RayExecutor(), tmp_path / "logs").run(steps)
    assert steps[0].output.read_text() == "a"


@needs_ray
def test_a_failing_stage_prints_its_own_error_line_and_nothing_new_starts(tmp_path, ray_local, capsys):
    error = "robocds-eval: error: --checkpoint 'missing.ckpt': no such file"
    steps = [
        python(tmp_path, "generate", "out.write_text('data')"),
        python(tmp_path, "evaluate", f"print('evaluating'); print({error!r}, file=sys.stderr); sys.exit(2)",
               "generate"),
        python(tmp_path, "train", "time.sleep(1.5); out.write_text('weights')", "generate"),
        python(tmp_path, "report", "out.write_text('report')", "evaluate"),
    ]  # fmt: skip
    with pytest.raises(subprocess.CalledProcessError) as failed:
        RayScheduler(RayExecutor(stage_cpus=1), tmp_path / "logs").run(steps)
    assert failed.value.returncode == 2 and failed.value.cmd == list(steps[1].command)
    captured = capsys.readouterr()
    assert error in captured.err.splitlines()  # the stage's own line, from the tail of its log
    assert f"--- last lines of {tmp_path / 'logs' / 'evaluate.log'}" in captured.err
    counts = re.search(r"FAILED: stage evaluate \(exit code 2\) \| cluster: (\d) running, (\d) queued", captured.out)
    assert counts and int(counts[1]) + int(counts[2]) == 1  # train: running, or still waiting for its worker
    assert (tmp_path / "train").read_text() == "weights"  # the running stage finished
    assert not (tmp_path / "report").exists() and not (tmp_path / "logs" / "report.log").exists()


def test_ray_options_are_refused_without_the_ray_executor_and_the_probe_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="^--address: only with --executor ray$"):
        main(["--address", "auto", "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="^--fit-gpus: only with --executor ray$"):
        main(["--fit-gpus", "1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    (tmp_path / "token").touch()
    assert probe_folder(str(tmp_path), "token") is None and sorted(p.name for p in tmp_path.iterdir()) == ["token"]
    assert (
        probe_folder(str(tmp_path), "other") == "is not the folder this process sees there (its probe file is missing)"
    )
    (tmp_path / f"token-{os.getpid()}").mkdir()  # where the node's own file would go
    assert probe_folder(str(tmp_path), "token").startswith("is not writable (IsADirectoryError")
