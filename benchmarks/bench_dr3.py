"""What DR3's co-adaptation term costs per update: without it, with phi(s') from an online pass, from the target's.

    .venv/bin/python benchmarks/bench_dr3.py                          # cpu shapes, both encoders, 1 thread
    .venv/bin/python benchmarks/bench_dr3.py --threads 2 --rounds 40

One optimizer step of No Sharing as the packaged configs train it (success weighting, failed episodes at 0.25) on
``bench_training``'s synthetic batch of the cpu scale (T = 5, B = 32, 48x48), for the default encoder
(``scale_cpu``, the ``cpu_wrist`` runs) and the half-width one (``scale_evidence``, the ``replay_wrist`` runs):

- ``off``: ``dr3_weight`` 0 (the shipped learner);
- ``online``: ``dr3_weight`` 0.01, ``dr3_next_features: online`` (one more online forward and backward pass);
- ``target``: ``dr3_weight`` 0.02, ``dr3_next_features: target`` (phi(s') from the targets' own pass).

Variants are timed in interleaved rounds in shuffled order, so machine noise hits them alike; medians and the
ratios to ``off`` are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from bench_training import SCALES, interleaved_times, load_average, make_update, median_ms, synthetic_batch

from robocds.config import CQLConfig, EncoderConfig

SHIPPED = {"conservative_weighting": "success", "failed_episode_weight": 0.25}
VARIANTS = {
    "off": CQLConfig(**SHIPPED),
    "online": CQLConfig(**SHIPPED, dr3_weight=0.01, dr3_next_features="online"),
    "target": CQLConfig(**SHIPPED, dr3_weight=0.02, dr3_next_features="target"),
}
ENCODERS = {
    "default (scale_cpu)": EncoderConfig(),
    "half width (scale_evidence)": EncoderConfig(channels=(16, 32, 32), feature_dim=128),
}


def measure(encoder: EncoderConfig, rounds: int, warmup: int) -> dict[str, list[float]]:
    shapes = SCALES["cpu"]
    batch = synthetic_batch(shapes, "cpu")
    updates = {name: make_update(shapes, "none", "cpu", encoder, cql) for name, cql in VARIANTS.items()}

    def run(name: str) -> float:
        start = time.perf_counter()
        updates[name](batch)
        return time.perf_counter() - start

    return interleaved_times(list(updates), run, rounds, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the sweeps train with 1)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per encoder")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates per variant")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
          f"load average {load_average()} at start")  # fmt: skip
    for label, encoder in ENCODERS.items():
        times = measure(encoder, args.rounds, args.warmup)
        off = statistics.median(times["off"])
        print(f"\n{label} encoder, channels {list(encoder.channels)}: {args.rounds} rounds")
        print(f"{'variant':<8} {'median (ms)':>12} {'/ off':>7}")
        for name, values in times.items():
            print(f"{name:<8} {median_ms(values):>12.1f} {statistics.median(values) / off:>7.2f}")
    print(f"\nload average {load_average()} at the end")


if __name__ == "__main__":
    main()
