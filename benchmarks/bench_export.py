"""Minari export: throughput, and memory against the amount of data exported (it should not grow).

The export streams one episode at a time, so its resident memory should stay flat while episodes
go by, however many there are. This runs ``export_minari`` on a dataset (to a temporary folder),
reads the resident set size (RSS, /proc/self/statm) after every episode, and prints per task the
RSS at its first and last episode, then the whole run's peak (ru_maxrss) beside what holding
the decoded dataset (every state's frame and proprio) would take.

    python benchmarks/bench_export.py --data data/benchmark
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> float:
    """Resident set size now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset root (manifest.json)")
    parser.add_argument("--tasks", nargs="+", help="tasks to export (default: all)")
    args = parser.parse_args()

    from robocds.datasets.manifest import read_manifest
    from robocds.datasets.minari_export import export_minari, import_minari

    import_minari()
    manifest = read_manifest(args.data)
    before = rss()
    samples: dict[str, list[float]] = {}

    def record(task: str, index: int) -> None:
        samples.setdefault(task, []).append(rss())

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = export_minari(args.data, out, tasks=args.tasks, progress=False, on_episode=record)
        seconds = time.perf_counter() - start
        out_mib = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / MIB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    episodes = sum(r.episodes for r in results)
    steps = sum(r.steps for r in results)
    state_bytes = manifest.image_size**2 * 3 + 4 * manifest.proprio_dim
    decoded = (steps + episodes) * state_bytes / MIB
    size = manifest.image_size
    print(f"dataset {manifest.name!r}: {size}x{size} frames, RSS before the export {before:.0f} MiB")
    print(f"{'task':<24}{'episodes':>9}{'steps':>8}{'RSS first ep':>13}{'RSS last ep':>12}{'growth':>8}  (MiB)")
    for r in results:
        first, last = samples[r.task][0], samples[r.task][-1]
        print(f"{r.task:<24}{r.episodes:>9}{r.steps:>8}{first:>13.0f}{last:>12.0f}{last - first:>8.1f}")
    print(
        f"\n{episodes} episodes, {steps} steps in {seconds:.1f} s ({steps / seconds:.0f} steps/s, "
        f"{episodes / seconds:.1f} episodes/s); output {out_mib:.0f} MiB"
    )
    print(
        f"peak RSS {peak:.0f} MiB = {peak - before:.0f} MiB above the RSS before the export; "
        f"holding the decoded dataset would take {decoded:.0f} MiB ({decoded / max(peak - before, 1e-9):.1f}x that)"
    )


if __name__ == "__main__":
    main()
