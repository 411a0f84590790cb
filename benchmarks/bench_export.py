"""Minari export: throughput, and peak memory against the amount of data exported (it should not grow).

Each configuration runs in a fresh process, which reports its peak resident memory (ru_maxrss)
after the imports and an env build (the floor), and after the export. The configurations export
the smallest task alone, then every task: if the export streams, both peaks are about equal,
while holding the data would cost the "decoded" figure printed beside them.

    python benchmarks/bench_export.py --data data/benchmark
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(data: str, out: str, tasks: list[str]) -> dict:
    import gymnasium as gym

    import robocds.envs  # noqa: F401
    from robocds.datasets.manifest import read_manifest
    from robocds.datasets.minari_export import export_minari, import_minari
    from robocds.datasets.recipe import recipe_from_dict
    from robocds.envs.registration import env_id

    import_minari()
    manifest = read_manifest(data)
    env = gym.make(env_id(tasks[0]), **recipe_from_dict(manifest.recipe).env_kwargs())  # what export builds
    env.close()
    floor = peak_rss()
    start = time.perf_counter()
    results = export_minari(data, out, tasks=tasks, progress=False)
    seconds = time.perf_counter() - start
    size = manifest.image_size
    episodes = sum(r.episodes for r in results)
    steps = sum(r.steps for r in results)
    frame_bytes = size * size * 3 + 4 * manifest.proprio_dim
    return {
        "tasks": len(tasks),
        "episodes": episodes,
        "steps": steps,
        "seconds": seconds,
        "floor_mib": floor / MIB,
        "peak_mib": peak_rss() / MIB,
        "decoded_mib": (steps + episodes) * frame_bytes / MIB,  # every state's frame and proprio, held at once
        "out_mib": sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset root (manifest.json)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.data, args.out, args.child)))
        return

    from robocds.datasets.manifest import read_manifest

    manifest = read_manifest(args.data)
    smallest = min(manifest.tasks, key=lambda t: t.transitions).name
    rows = []
    for tasks in ([smallest], list(manifest.task_names)):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, __file__, "--data", args.data, "--out", out, "--child", *tasks]
            stdout = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(stdout.strip().splitlines()[-1]))  # pybullet prints to stdout first
    print(f"dataset {manifest.name!r}: {manifest.image_size}x{manifest.image_size} frames")
    header = f"{'tasks':>5}{'episodes':>9}{'steps':>8}{'steps/s':>9}{'floor MiB':>10}{'peak MiB':>9}"
    header += f"{'peak-floor':>11}{'decoded MiB':>12}{'out MiB':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['tasks']:>5}{r['episodes']:>9}{r['steps']:>8}{r['steps'] / r['seconds']:>9.0f}{r['floor_mib']:>10.0f}"
            f"{r['peak_mib']:>9.0f}{r['peak_mib'] - r['floor_mib']:>11.1f}{r['decoded_mib']:>12.0f}{r['out_mib']:>8.0f}"
        )
    small, full = rows
    print(
        f"\nexport working memory (peak - floor): {small['peak_mib'] - small['floor_mib']:.1f} MiB for "
        f"{small['steps']} steps, {full['peak_mib'] - full['floor_mib']:.1f} MiB for {full['steps']} steps "
        f"({full['steps'] / small['steps']:.0f}x the data); holding the full decoded data would take "
        f"{full['decoded_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
