"""Comparison throughput on a small CPU: one stage at a time with all cores, or two at a time with one each.

What ``robocds-compare --jobs 2`` relies on, measured with the commands the comparison runs:

- training: one ``robocds fit`` with 2 torch threads vs two concurrent fits with 1 thread each
  (steps per second of the machine, all fits counted);
- evaluation: one ``robocds-eval`` with 2 env workers (the comparison's default with one job) vs two
  concurrent in-process evaluations (``--workers 0``, what it runs with two jobs) vs one in-process
  evaluation alone (episodes per second of the machine);
- diagnostics: one ``robocds-analyse`` alone (seconds).

Each measurement is a whole process from start to exit (imports, data loading, checkpoints
included), as in a comparison; the settings alternate round by round, and medians and ratios are
printed. The dataset is generated once under ``--data`` (default: the evidence scale's recipe).

    python benchmarks/bench_jobs.py --steps 500 --episodes 10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robocds.threads import THREAD_COUNT_VARIABLES


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, **{name: str(threads) for name in THREAD_COUNT_VARIABLES}}


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def concurrently(commands: list[tuple[list[str], dict[str, str]]]) -> float:
    """Start every command at once; wall seconds until the last one exits (each must succeed)."""
    logs = [tempfile.TemporaryFile() for _ in commands]  # not pipes: a full pipe would stall its process
    start = time.perf_counter()
    processes = [subprocess.Popen(cmd, env=env, stdout=log, stderr=log) for (cmd, env), log in zip(commands, logs)]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - start
    for code, (cmd, _), log in zip(codes, commands, logs):
        if code != 0:
            log.seek(0)
            raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read().decode(errors='replace')[-2000:]}")
    return seconds


def fit_command(data: Path, runs: Path, name: str, steps: int, method: str) -> list[str]:
    return _python(
        "robocds.train", "fit", "--config", "base", "--config", method, "--config", "scale_cpu",
        "--data.root", str(data), "--trainer.max_steps", str(steps), "--runs_dir", str(runs), "--run_name", name,
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip


def eval_command(checkpoint: Path, out: Path, episodes: int, workers: int, videos: int) -> list[str]:
    return _python(
        "robocds.eval", "--checkpoint", str(checkpoint), "--out", str(out), "--episodes", str(episodes),
        "--workers", str(workers), "--videos", str(videos),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/bench-jobs/data", help="dataset folder (generated if missing)")
    parser.add_argument("--recipe", default="benchmark_cpu_replay", help="recipe of a dataset generated here")
    parser.add_argument("--method", default="cds", help="training config of the fits")
    parser.add_argument("--steps", type=int, default=500, help="training steps per fit")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per task")
    parser.add_argument("--videos", type=int, default=1, help="videos per task of each evaluation")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "manifest.json").is_file():
        subprocess.run(
            _python("robocds.datasets.generate", args.recipe, "--root", str(data), "--workers", "2"), check=True
        )
    from robocds.datasets.manifest import read_manifest

    tasks = len(read_manifest(str(data)).tasks)
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    fit: dict[str, list[float]] = {"one fit, 2 threads": [], "two fits, 1 thread each": []}
    evaluation: dict[str, list[float]] = {
        "one eval, 2 workers": [],
        "two evals, in-process": [],
        "one eval, in-process": [],
    }
    analyse: list[float] = []
    for round_ in range(args.rounds):
        runs = work / f"round{round_}"
        single = [(fit_command(data, runs, "single", args.steps, args.method), _env(2))]
        pair = [(fit_command(data, runs, f"pair{k}", args.steps, args.method), _env(1)) for k in range(2)]
        order = [("one fit, 2 threads", single), ("two fits, 1 thread each", pair)]
        for name, commands in order if round_ % 2 == 0 else order[::-1]:
            fit[name].append(concurrently(commands) / (args.steps * len(commands)))
            print(f"round {round_}: {name}: {fit[name][-1] * 1000:.1f} ms of wall per step", flush=True)
        ckpt = runs / "single" / "version_0" / "checkpoints" / "last.ckpt"
        evals = {
            "one eval, 2 workers": [(eval_command(ckpt, runs / "e2w", args.episodes, 2, args.videos), _env(1))],
            "two evals, in-process": [
                (eval_command(ckpt, runs / f"e0-{k}", args.episodes, 0, args.videos), _env(1)) for k in range(2)
            ],
            "one eval, in-process": [(eval_command(ckpt, runs / "e0", args.episodes, 0, args.videos), _env(1))],
        }
        names = list(evals) if round_ % 2 == 0 else list(evals)[::-1]
        for name in names:
            episodes = args.episodes * tasks * len(evals[name])
            evaluation[name].append(concurrently(evals[name]) / episodes)
            print(f"round {round_}: {name}: {evaluation[name][-1]:.2f} s of wall per episode", flush=True)
        command = _python(
            "robocds.eval.analysis", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(runs / "a")
        )
        analyse.append(concurrently([(command, _env(1))]))
        print(f"round {round_}: one analysis: {analyse[-1]:.1f} s", flush=True)

    print(
        f"\n{args.rounds} rounds; {args.steps} steps per fit ({args.method}, scale_cpu); "
        f"{args.episodes} episodes per task"
    )
    base = statistics.median(fit["one fit, 2 threads"])
    for name, values in fit.items():
        median = statistics.median(values)
        print(f"{name:28s} {median * 1000:7.1f} ms/step  {1 / median:6.2f} steps/s  vs one fit: {base / median:.2f}x")
    base = statistics.median(evaluation["one eval, 2 workers"])
    for name, values in evaluation.items():
        median = statistics.median(values)
        print(f"{name:28s} {median:7.2f} s/episode  {1 / median:6.2f} episodes/s  vs 2 workers: {base / median:.2f}x")
    print(f"{'one analysis':28s} {statistics.median(analyse):7.1f} s")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
