"""Evaluation throughput: episodes/s of an (untrained) network policy for several layouts.

A layout is WORKERSxENVS: env worker processes (0: in-process) x concurrent episodes per worker
(the policy acts on all of them in one batch). Each layout rolls out the same episodes (same
evaluation seeds, fixed episode length), in one run, repeated and interleaved; medians and ratios to
the first layout are printed. The policy runs on the GPU when one is present (``--device``).

    python benchmarks/bench_eval.py --layouts 0x1 2x1 2x4 --episodes 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import PROPRIO_DIM, TASK_NAMES, EnvSettings
from robocds.eval.evaluate import rollout
from robocds.eval.policy import ModulePolicy
from robocds.module import MultiTaskCQL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=["0x1", "2x1", "2x4"], help="WORKERSxENVS")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20, help="every episode runs this long (untrained policy)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    settings = EnvSettings(max_steps=args.max_steps)  # the default env otherwise
    module = MultiTaskCQL(
        len(TASK_NAMES), NUM_ACTIONS, settings.image_size, PROPRIO_DIM, TASK_NAMES, env=settings.to_json_dict()
    )
    module = module.to(args.device).eval()
    policy = ModulePolicy(module, "untrained")
    layouts = {name: tuple(int(v) for v in name.split("x")) for name in args.layouts}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    episodes = args.episodes * len(args.tasks)
    for _ in range(args.repeats):
        for name, (workers, envs) in layouts.items():  # interleaved: drift in machine load hits every layout
            start = time.perf_counter()
            records, _ = rollout(
                policy, args.tasks, args.episodes, workers, settings, progress=False, envs_per_worker=envs
            )
            times[name].append(time.perf_counter() - start)
            assert len(records) == episodes
    first = args.layouts[0]
    base = statistics.median(times[first])
    print(
        f"device {args.device}, {episodes} episodes x {args.max_steps} steps per configuration, {args.repeats} repeats"
    )
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(
            f"layout {name:>4} (workers x envs): median {median:6.2f} s  {episodes / median:6.2f} episodes/s  "
            f"{episodes * args.max_steps / median:7.1f} steps/s  "
            f"speed-up vs {first}: {base / median:4.2f}x"
        )


if __name__ == "__main__":
    main()
