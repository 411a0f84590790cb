"""Streaming loader throughput with and without sha256 verification of the shards, side by side.

    python benchmarks/bench_streaming_verify.py                   # generates a small dataset first
    python benchmarks/bench_streaming_verify.py --data data/cpu   # an existing dataset

Three readers of the same shards, in one DataLoader worker each, measured in alternating rounds
(every round builds a fresh loader per reader, in a rotated order, skips ``--warmup`` batches, then
times ``--batches``):

- ``verified``: the pipeline as it is used: each shard read whole, hashed as its bytes stream in,
  and checked against the manifest (size, sha256) before its samples move on;
- ``unverified``: the same reader with ``verify=False`` (no hashing; the size is still checked);
- ``webdataset``: the shard stage replaced by ``webdataset.tarfile_to_samples``, the reader the
  pipeline used before it verified anything.

Prints the median ms per batch of each reader and the ratios to ``webdataset``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import webdataset as wds

from robocds.datasets.generate import generate
from robocds.datasets.recipe import load_recipe
from robocds.datasets.streaming import StreamingMultiTaskDataset


class WebDatasetReader(StreamingMultiTaskDataset):
    """The streaming dataset with WebDataset's own tar reader as the shard stage (no verification)."""

    def _shard_reader(self, entries, task):
        return wds.tarfile_to_samples()


def small_dataset(root: Path, episodes: int) -> Path:
    recipe = load_recipe("benchmark_cpu")
    tasks = tuple(replace(task, episodes=episodes) for task in recipe.tasks)
    generate(replace(recipe, tasks=tasks, episodes_per_shard=2), str(root), workers=2, progress=False)
    return root


def batch_ms(reader: type, data: str, args, verify: bool) -> float:
    dataset = reader(data, args.batch_size, steps=10**6, shuffle_buffer=args.shuffle_buffer, verify=verify)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, prefetch_factor=4)
    iterator = iter(loader)
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator
    return 1000 * seconds / args.batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="existing dataset (default: generate benchmark_cpu's tasks, small)")
    parser.add_argument("--episodes", type=int, default=6, help="episodes per task of the generated dataset")
    parser.add_argument("--batch-size", type=int, default=64, help="transitions per task per batch")
    parser.add_argument("--shuffle-buffer", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 DataLoader worker per reader")
    readers = {
        "verified": (StreamingMultiTaskDataset, True),
        "unverified": (StreamingMultiTaskDataset, False),
        "webdataset": (WebDatasetReader, False),
    }
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        data = args.data or str(small_dataset(Path(tmp) / "data", args.episodes))
        times: dict[str, list[float]] = {name: [] for name in readers}
        names = list(readers)
        for r in range(args.rounds):
            # Alternate, and rotate who goes first: every reader sees the same share of background load.
            for name in names[r % len(names) :] + names[: r % len(names)]:
                reader, verify = readers[name]
                times[name].append(batch_ms(reader, data, args, verify))
            print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.1f} ms" for n, t in times.items()), flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["webdataset"]
    print("\nmedian ms per batch (ratio to the webdataset reader)")
    for name, value in medians.items():
        print(f"  {name:<11} {value:7.1f} ms  {value / base:.3f}x")


if __name__ == "__main__":
    main()
