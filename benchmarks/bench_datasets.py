"""Dataset benchmark: generation episodes/s (1 vs 2 workers) and loader throughput against a training step.

    python benchmarks/bench_datasets.py                       # the figures in docs/DATASETS.md
    python benchmarks/bench_datasets.py --gen-episodes 4 --repeats 1 --steps 10   # a quick look

1. Generation: the benchmark recipe's tasks and oracle noise, ``--gen-episodes`` episodes per task,
   written with 1 and with 2 worker processes, alternating, ``--repeats`` times each; wall clock
   includes starting the worker processes. Target: 2 workers >= 1.7x one.
2. Loading, on the dataset just written (T = 9 tasks, B = ``--batch-size`` transitions per task):
   - the training step: a STAND-IN (no learner is measured here): a 4-layer conv net with a
     [T, A] head, online forward on the images, target forward on the next images, a TD loss on
     each task's own rows, backward and Adam; ``--threads`` torch threads;
   - in-memory sampling time per batch, as a fraction of that step (target < 10%);
   - streaming: transitions/s of the WebDataset pipeline in ``--loader-workers`` DataLoader
     worker(s), against the transitions/s the step consumes; and a training loop fed by each
     loader, whose step time shows whether streaming keeps up (ratio ~1.0).
Medians of repeated measurements; ratios come from the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from robocds.cql import data_action_values
from robocds.datasets.datamodule import OfflineDataModule
from robocds.datasets.recipe import load_recipe
from robocds.datasets.replay import load_replay
from robocds.datasets.schema import BATCH_ACTION, BATCH_IMAGE, BATCH_NEXT_IMAGE, BATCH_REWARDS, BATCH_SUCCESSES


class StandInQNet(torch.nn.Module):
    """4 conv layers + MLP head -> Q [N, T, A]; a stand-in for the learner's network, for timing only."""

    def __init__(self, num_tasks: int, num_actions: int, image_size: int) -> None:
        super().__init__()
        self.num_tasks, self.num_actions = num_tasks, num_actions
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 8, stride=4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 4, stride=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, stride=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, stride=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
        )
        features = self.conv(torch.zeros(1, 3, image_size, image_size)).shape[1]
        self.head = torch.nn.Sequential(
            torch.nn.Linear(features, 256), torch.nn.ReLU(), torch.nn.Linear(256, num_tasks * num_actions)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(image.float() / 255.0)).view(-1, self.num_tasks, self.num_actions)


class StandInStep:
    """One TD update of ``StandInQNet`` on a [T, B, ...] batch (online + target forward, backward, Adam)."""

    def __init__(self, num_tasks: int, num_actions: int, image_size: int) -> None:
        self.net = StandInQNet(num_tasks, num_actions, image_size)
        self.target = StandInQNet(num_tasks, num_actions, image_size)
        self.target.load_state_dict(self.net.state_dict())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=3e-4)

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        t, b = batch[BATCH_ACTION].shape
        rows = torch.arange(t)
        q = self.net(batch[BATCH_IMAGE].flatten(0, 1)).view(t, b, t, -1)[rows, :, rows]  # [T, B, A] own task
        with torch.no_grad():
            next_q = self.target(batch[BATCH_NEXT_IMAGE].flatten(0, 1)).view(t, b, t, -1)[rows, :, rows]
            reward = batch[BATCH_REWARDS][rows, :, rows]
            done = batch[BATCH_SUCCESSES][rows, :, rows]
            target = reward + 0.99 * (1 - done) * next_q.max(-1).values
        chosen = data_action_values(q, batch[BATCH_ACTION])
        loss = torch.nn.functional.mse_loss(chosen, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def bench_generation(args, root: Path) -> dict:
    """Run ``robocds-generate`` (as a user would) with 1 and 2 workers, alternating; episodes/s from its report."""
    recipe = load_recipe("benchmark")
    tasks = tuple(replace(task, episodes=args.gen_episodes) for task in recipe.tasks)
    recipe = recipe.with_overrides(name="bench", tasks=tasks, episodes_per_shard=args.episodes_per_shard)
    recipe_path = root / "bench.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe.to_json_dict(), sort_keys=False))
    rates: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
            out = root / f"gen-w{workers}-r{repeat}"
            command = [sys.executable, "-m", "robocds.datasets.generate", str(recipe_path), "--root", str(out)]
            command += ["--workers", str(workers), "--no-progress"]
            before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise RuntimeError(f"generation failed:\n{done.stderr}")
            report = re.search(r"(\d+) episodes in ([\d.]+) s \(([\d.]+) episodes/s\)", done.stdout)
            assert report is not None, done.stdout
            rates[workers].append(float(report.group(3)))
            # On a shared machine the speed-up is bounded by the cores the run actually got: report them.
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            cores[workers].append(cpu / wall)
            print(f"  generation: {workers} worker(s): {report.group(0)}; cores obtained {cpu / wall:.2f}", flush=True)
            if (root / "data").exists():
                shutil.rmtree(out)
            else:
                out.rename(root / "data")  # keep one copy for the loader benchmark
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return {
        "episodes_per_run": recipe.total_episodes,
        "shards_per_run": sum(recipe.num_shards(t) for t in recipe.task_names),
        "episodes_per_s_1_worker": one,
        "episodes_per_s_2_workers": two,
        "speedup_2_vs_1": two / one,
        "cores_obtained_1_worker": statistics.median(cores[1]),
        "cores_obtained_2_workers": statistics.median(cores[2]),
        "runs": {str(k): v for k, v in rates.items()},
    }


def _median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def bench_loaders(args, data: Path) -> dict:
    dm_memory = OfflineDataModule(str(data), batch_size=args.batch_size, steps_per_epoch=args.steps + 10, val_batches=0)
    t, b = dm_memory.num_tasks, args.batch_size
    per_batch = t * b
    step = StandInStep(t, dm_memory.num_actions, dm_memory.image_size)

    replay = load_replay(str(data))
    generator = torch.Generator().manual_seed(0)
    batch = replay.sample(b, generator)
    for _ in range(3):
        step(batch)  # warm-up
    step_times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step(batch)
        step_times.append(time.perf_counter() - start)
    step_ms = _median_ms(step_times)
    print(f"  stand-in training step: {step_ms:.1f} ms for {per_batch} transitions", flush=True)

    sample_times = []
    for _ in range(max(50, args.steps)):
        start = time.perf_counter()
        replay.sample(b, generator)
        sample_times.append(time.perf_counter() - start)
    sample_ms = _median_ms(sample_times)
    print(f"  in-memory sampling: {sample_ms:.2f} ms per batch", flush=True)

    stream = OfflineDataModule(
        str(data),
        batch_size=b,
        loader="streaming",
        num_workers=args.loader_workers,
        steps_per_epoch=args.steps * 4 + 10,
        val_batches=0,
        shuffle_buffer=args.shuffle_buffer,
    )
    stream.setup("fit")
    intervals = []
    iterator = iter(stream.train_dataloader())
    for _ in range(5):
        next(iterator)  # workers started and shuffle buffers filled
    last = time.perf_counter()
    for _ in range(args.steps * 2):
        next(iterator)
        now = time.perf_counter()
        intervals.append(now - last)
        last = now
    del iterator
    stream_ms = _median_ms(intervals)
    print(f"  streaming alone ({args.loader_workers} worker(s)): {stream_ms:.1f} ms per batch", flush=True)

    def fed_loop(loader) -> float:
        times = []
        iterator = iter(loader)
        for _ in range(3):
            step(next(iterator))
        last = time.perf_counter()
        for _ in range(args.steps):
            step(next(iterator))
            now = time.perf_counter()
            times.append(now - last)
            last = now
        return _median_ms(times)

    dm_memory.setup("fit")
    memory_loader, stream_loader = dm_memory.train_dataloader(), stream.train_dataloader()
    fed_memory, fed_stream = [], []
    for _ in range(2):  # alternate, so both see the same share of the machine's background load
        fed_memory.append(fed_loop(memory_loader))
        fed_stream.append(fed_loop(stream_loader))
    fed_memory_ms, fed_stream_ms = statistics.median(fed_memory), statistics.median(fed_stream)
    print(f"  training fed by memory: {fed_memory_ms:.1f} ms/step; by streaming: {fed_stream_ms:.1f} ms/step")
    return {
        "tasks": t,
        "batch_size_per_task": b,
        "transitions_per_batch": per_batch,
        "replay_transitions": replay.num_transitions,
        "replay_megabytes": replay.nbytes() / 2**20,
        "train_step_ms": step_ms,
        "train_consumes_transitions_per_s": per_batch / (step_ms / 1000),
        "memory_sample_ms": sample_ms,
        "memory_transitions_per_s": per_batch / (sample_ms / 1000),
        "memory_sample_fraction_of_step": sample_ms / step_ms,
        "streaming_batch_ms": stream_ms,
        "streaming_transitions_per_s": per_batch / (stream_ms / 1000),
        "streaming_over_consumption": (per_batch / stream_ms) / (per_batch / step_ms),
        "fed_by_memory_step_ms": fed_memory_ms,
        "fed_by_streaming_step_ms": fed_stream_ms,
        "streaming_fed_over_memory_fed": fed_stream_ms / fed_memory_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen-episodes", type=int, default=8, help="episodes per task per generation run")
    parser.add_argument("--episodes-per-shard", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="generation runs per worker count")
    parser.add_argument("--batch-size", type=int, default=64, help="transitions per task per batch (base.yaml: 64)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps / batches per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training step")
    parser.add_argument("--loader-workers", type=int, default=1, help="streaming DataLoader workers")
    parser.add_argument("--shuffle-buffer", type=int, default=500)
    parser.add_argument("--data", help="existing dataset for the loader part (skips generation)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    figures: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        root = Path(tmp)
        if args.data:
            data = Path(args.data)
        else:
            print("generation:", flush=True)
            figures["generation"] = bench_generation(args, root)
            data = root / "data"
        print("loading:", flush=True)
        figures["loading"] = bench_loaders(args, data)

    print("\nsummary (medians)")
    if "generation" in figures:
        g = figures["generation"]
        print(
            f"  generation: 1 worker {g['episodes_per_s_1_worker']:.2f} ep/s, "
            f"2 workers {g['episodes_per_s_2_workers']:.2f} ep/s, speedup {g['speedup_2_vs_1']:.2f}x (target >= 1.7x)"
        )
        print(
            f"  CPU cores the generation runs obtained: {g['cores_obtained_1_worker']:.2f} with 1 worker, "
            f"{g['cores_obtained_2_workers']:.2f} with 2 (below 2: the machine was busy with other work)"
        )
    lo = figures["loading"]
    consumption = lo["train_consumes_transitions_per_s"]
    print(f"  training step (stand-in): {lo['train_step_ms']:.1f} ms = {consumption:.0f} transitions/s")
    print(
        f"  in-memory: {lo['memory_sample_ms']:.2f} ms/batch = {lo['memory_transitions_per_s']:.0f} transitions/s, "
        f"{100 * lo['memory_sample_fraction_of_step']:.1f}% of a step (target < 10%)"
    )
    print(
        f"  streaming: {lo['streaming_transitions_per_s']:.0f} transitions/s = "
        f"{lo['streaming_over_consumption']:.1f}x what training consumes; fed step "
        f"{lo['fed_by_streaming_step_ms']:.1f} ms vs {lo['fed_by_memory_step_ms']:.1f} ms from memory "
        f"({lo['streaming_fed_over_memory_fed']:.2f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
