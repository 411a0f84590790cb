"""Cost of cds_heldout's threshold estimate next to a training step, side by side in one run.

    .venv/bin/python benchmarks/bench_heldout.py                    # CPU scale, 1 thread
    .venv/bin/python benchmarks/bench_heldout.py --scale gpu --device cuda

One estimate (``robocds.callbacks.own_data_values`` + the mean rule) scores ``--val-batches`` validation
batches of T x ``--val-batch-size`` frames with the network in eval mode, no gradient; one training step is
the CDS update of ``bench_training.py`` (forward with the DrQ shift, target pass, routing, loss, backward,
Adam, Polyak) on T x B frames. Both run on synthetic batches of the scale's shapes, interleaved (one of
each per round, order shuffled), after warm-up; medians, their ratio, and the overhead of one estimate
every N steps (``--every``, the packaged config's 100).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from bench_training import SCALES, interleaved_times, make_update, synthetic_batch

from robocds.callbacks import own_data_values
from robocds.config import CQLConfig
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import PROPRIO_DIM
from robocds.module import MultiTaskCQL
from robocds.sharing import batch_thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--val-batches", type=int, default=4, help="scale_cpu.yaml's data.val_batches")
    parser.add_argument("--val-batch-size", type=int, default=None, help="default: the scale's B")
    parser.add_argument("--every", type=int, default=100, help="steps between estimates (heldout_every_n_steps)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = SCALES[args.scale]
    val_shapes = replace(shapes, batch_size=args.val_batch_size or shapes.batch_size)
    update, batch = make_update(shapes, "cds", args.device), synthetic_batch(shapes, args.device)
    model = MultiTaskCQL(shapes.tasks, NUM_ACTIONS, shapes.image_size, PROPRIO_DIM, cql=CQLConfig())
    model = model.to(args.device).train()
    val = [synthetic_batch(val_shapes, args.device) for _ in range(args.val_batches)]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    work = {"step": lambda: update(batch), "estimate": lambda: batch_thresholds(own_data_values(model, val))}

    def timed(name: str) -> float:
        start = time.perf_counter()
        work[name]()
        sync()
        return time.perf_counter() - start

    times = interleaved_times(list(work), timed, args.rounds, args.warmup)
    step, estimate = (statistics.median(times[name]) * 1000 for name in ("step", "estimate"))
    frames = args.val_batches * shapes.tasks * val_shapes.batch_size
    print(f"scale {shapes.name} (T={shapes.tasks}, B={shapes.batch_size}, {shapes.image_size}x{shapes.image_size}), "
          f"{args.device}, {args.threads} thread(s), {args.rounds} rounds")  # fmt: skip
    print(f"training step (cds):          median {step:8.1f} ms")
    print(f"held-out estimate ({frames} frames): median {estimate:8.1f} ms  = {estimate / step:.2f} steps")
    print(f"one estimate every {args.every} steps: +{estimate / (args.every * step):.1%} training time")


if __name__ == "__main__":
    main()
