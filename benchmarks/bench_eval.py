"""Evaluation throughput: episodes/s of an (untrained) network policy for several worker counts.

Each configuration rolls out the same episodes (same evaluation seeds, fixed episode length), in one
run, repeated and interleaved; medians and ratios to the in-process baseline are printed. The
policy runs on the GPU when one is present (``--device``), else on the CPU.

    python benchmarks/bench_eval.py --workers 0 1 2 --episodes 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robocds.envs.tasks import TASK_NAMES
from robocds.eval.evaluate import rollout
from robocds.eval.policy import ModulePolicy
from robocds.eval.workers import EnvSettings
from robocds.module import MultiTaskCQL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20, help="every episode runs this long (untrained policy)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    module = MultiTaskCQL(len(TASK_NAMES), 8, 64, 4, task_names=TASK_NAMES).to(args.device).eval()
    policy = ModulePolicy(module, "untrained")
    settings = EnvSettings(image_size=64, max_steps=args.max_steps)
    times: dict[int, list[float]] = {w: [] for w in args.workers}
    episodes = args.episodes * len(args.tasks)
    for _ in range(args.repeats):
        for workers in args.workers:  # interleaved, so drift in machine load hits every configuration
            start = time.perf_counter()
            records, _ = rollout(policy, args.tasks, args.episodes, workers, settings, progress=False)
            times[workers].append(time.perf_counter() - start)
            assert len(records) == episodes
    base = statistics.median(times[args.workers[0]])
    print(
        f"device {args.device}, {episodes} episodes x {args.max_steps} steps per configuration, {args.repeats} repeats"
    )
    for workers, seconds in times.items():
        median = statistics.median(seconds)
        print(
            f"workers {workers}: median {median:6.2f} s  {episodes / median:6.2f} episodes/s  "
            f"{episodes * args.max_steps / median:7.1f} steps/s  "
            f"speed-up vs workers {args.workers[0]}: {base / median:4.2f}x"
        )


if __name__ == "__main__":
    main()
