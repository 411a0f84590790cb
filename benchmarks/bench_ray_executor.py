"""The Ray executor's overhead per stage against the local scheduler on the same tiny plan; and, on paper, a
study's wall time on N nodes from measured per-stage costs.

    python benchmarks/bench_ray_executor.py --runs 6 --repeats 5

Measured: two plans whose commands are ``true`` (every stage is a marker, touched when its command exits),
so what is left is the scheduling:

- ``comparison``: the shape of ``robocds-compare``'s plan: generate, then a reference evaluation, and per run
  train -> (evaluate, analyse); ``--runs`` runs;
- ``chain``: the same number of stages, each after the previous: one stage's round trip, nothing beside it.

Each plan runs under the local ``Scheduler`` (``--jobs 2``, its 0.5 s poll: what ``robocds-compare`` uses)
and under ``RayScheduler`` on a local Ray instance of 2 CPUs (``ray.init`` timed apart: once per command),
alternating, ``--repeats`` times after one warm-up round of each; medians are printed, per stage, and the
difference (Ray - local) / stages.

On paper (``--nodes``): the list schedule of the real ``robocds-compare --scale evidence`` plan (7 methods x 5
seeds, and the same with all 9 methods) on N nodes that each run one stage at a time, the stages in the
scheduler's order (plan order among the ready ones), with per-stage minutes from docs/RESULTS.md
(``--train``, ``--evaluate``, ``--analyse``, ``--generate``, ``--reference``) plus the Ray executor's
measured time per stage of the chain (or ``--overhead``).
"""

from __future__ import annotations

import argparse
import heapq
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from robocds.pipeline.stages import Scheduler, Step


def comparison_plan(root: Path, runs: int, command: tuple[str, ...]) -> list[Step]:
    """generate -> reference; per run: train -> (evaluate, analyse)."""

    def step(key: str, *after: str) -> Step:
        return Step(key, key, root / key, command, marker=True, after=after)

    steps = [step("generate"), step("reference", "generate")]
    for run in range(runs):
        steps += [step(f"train-{run}", "generate"), step(f"evaluate-{run}", f"train-{run}"),
                  step(f"analyse-{run}", f"train-{run}")]  # fmt: skip
    return steps


def chain_plan(root: Path, stages: int, command: tuple[str, ...]) -> list[Step]:
    return [
        Step(f"s{i}", f"s{i}", root / f"s{i}", command, marker=True, after=(f"s{i - 1}",) if i else ())
        for i in range(stages)
    ]


def timed(make_scheduler, plan) -> float:
    """Seconds to run ``plan`` (made in a fresh folder) with a fresh scheduler, progress lines discarded."""
    import contextlib
    import io

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        steps = plan(root)
        scheduler = make_scheduler(root)
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            scheduler.run(steps)
            seconds = time.perf_counter() - start
        assert all(step.output.exists() for step in steps)
        return seconds
    finally:
        shutil.rmtree(root)


def measure(runs: int, repeats: int) -> tuple[float, dict[str, dict[str, float]], int]:
    """(ray.init seconds, {plan: {executor: median seconds}}, stages per plan)."""
    import ray

    from robocds.pipeline.ray_executor import RayExecutor, RayScheduler

    command = (shutil.which("true") or "/bin/true",)
    stages = len(comparison_plan(Path("."), runs, command))
    plans = {
        "comparison": lambda root: comparison_plan(root, runs, command),
        "chain": lambda root: chain_plan(root, stages, command),
    }
    executors = {
        "local": lambda root: Scheduler(2, root / "logs"),
        "ray": lambda root: RayScheduler(RayExecutor(), root / "logs"),
    }
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    init = time.perf_counter() - start
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in executors} for name in plans}
    try:
        for round_ in range(repeats + 1):  # round 0 warms up (Ray starts its workers)
            for name, plan in plans.items():
                for kind, make in executors.items():
                    seconds = timed(make, plan)
                    if round_:
                        times[name][kind].append(seconds)
    finally:
        ray.shutdown()
    return init, {name: {kind: statistics.median(v) for kind, v in by.items()} for name, by in times.items()}, stages


def list_schedule(steps: list[Step], minutes: Callable[[Step], float], nodes: int) -> float:
    """Wall minutes of ``steps`` on ``nodes`` one-stage-at-a-time slots, the ready stages started in plan order
    (the scheduler's rule), each taking ``minutes(step)``."""
    done: set[str] = set()
    pending = list(steps)
    running: list[tuple[float, str]] = []  # (end, key), a heap
    now = 0.0
    while pending or running:
        while len(running) < nodes:
            ready = next((s for s in pending if all(key in done for key in s.after)), None)
            if ready is None:
                break
            pending.remove(ready)
            heapq.heappush(running, (now + minutes(ready), ready.key))
        now, key = heapq.heappop(running)
        done.add(key)
    return now


def study_plan(scale_name: str, methods: int | None) -> list[Step]:
    """The real plan of ``robocds-compare --scale <scale_name>`` (the first ``methods`` of METHODS when given),
    record steps left out (quick bookkeeping in the driver)."""
    from robocds.datasets.recipe import load_recipe
    from robocds.pipeline.compare import METHODS, SCALES, ExperimentLayout, plan, with_overrides

    scale = SCALES[scale_name]
    if methods is not None:
        scale = with_overrides(scale, methods=list(METHODS[:methods]))
    tasks = load_recipe(scale.recipe).task_names
    steps, _ = plan(scale, ExperimentLayout(Path(tempfile.gettempdir()) / "plan"), tasks, 2, 1, [])
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="runs of the measured comparison-shaped plan")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead", type=float, help="skip the measurement: Ray's overhead per stage (s)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 35, 45])
    parser.add_argument("--train", type=float, default=4.6, help="minutes per fit (RESULTS.md: 4.4-4.7)")
    parser.add_argument("--evaluate", type=float, default=2.1, help="minutes per evaluation (RESULTS.md)")
    parser.add_argument("--analyse", type=float, default=0.4, help="minutes per diagnostics stage (RESULTS.md)")
    parser.add_argument("--generate", type=float, default=0.4, help="minutes of generation (RESULTS.md)")
    parser.add_argument("--reference", type=float, default=2.1, help="minutes of the random policy's evaluation")
    args = parser.parse_args()

    overhead = args.overhead
    if overhead is None:
        init, medians, stages = measure(args.runs, args.repeats)
        print(f"ray.init (a local instance of 2 CPUs): {init:.1f} s, once per command")
        print(f"{stages} stages per plan, medians of {args.repeats} (commands: true)")
        for name, by in medians.items():
            extra = (by["ray"] - by["local"]) / stages
            print(f"  {name:10s} local {by['local']:6.2f} s ({by['local'] / stages * 1000:5.0f} ms/stage)   "
                  f"ray {by['ray']:6.2f} s ({by['ray'] / stages * 1000:5.0f} ms/stage)   "
                  f"ray - local: {extra * 1000:+5.0f} ms/stage")  # fmt: skip
        # For the estimate below: the Ray executor's whole time per stage on the chain (an upper bound on its
        # overhead: it includes starting `true`), not its difference from the local scheduler (negative here).
        overhead = medians["chain"]["ray"] / stages
    minutes = {"generate": args.generate, "evaluate": args.evaluate, "train": args.train, "analyse": args.analyse}
    print(f"\non paper: stage minutes {minutes}, the random policy's evaluation {args.reference}, "
          f"+ {overhead:.2f} s per stage; one stage at a time per node")  # fmt: skip

    def cost(step: Step) -> float:
        own = args.reference if step.key == "evaluate-random" else minutes[step.key.split("-", 1)[0]]
        return own + overhead / 60

    for label, methods in [("evidence, 7 methods x 5 seeds", None), ("9 methods x 5 seeds", 9)]:
        steps = [step for step in study_plan("evidence", methods) if not step.key.startswith("record-")]
        runs = sum(step.key.startswith("train-") for step in steps)
        walls = ", ".join(f"{nodes}: {list_schedule(steps, cost, nodes):.0f} min" for nodes in args.nodes)
        print(f"{label} ({runs} runs, {len(steps)} stages), wall by nodes: {walls}")


if __name__ == "__main__":
    main()
