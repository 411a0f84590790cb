"""Training throughput: the code before and after issue 13 side by side in one run, d3rlpy as a reference.

    .venv/bin/python benchmarks/bench_training.py                  # both scales: update alone, then whole fits
    .venv/bin/python benchmarks/bench_training.py --scales cpu --fit-repeats 3
    .venv/bin/python benchmarks/bench_training.py --d3rlpy-python /path/to/venv-with-d3rlpy/bin/python

Scales (both run on this machine's CPU unless ``--device cuda``): ``cpu`` = the CPU benchmark's shapes
(T = 5 tasks, B = 32 per task, 48x48 frames, ``scale_cpu.yaml``), ``gpu`` = the GPU scale's shapes
(T = 9, B = 64, 64x64, ``scale_gpu.yaml``).

Paths compared ("old" is reproduced here so both run from the same checkout):

- old: the DrQ shift by two full-size ``gather`` calls (``legacy_random_shift`` below, the code before
  issue 13) and OpenMP's default wait policy (threads spin between operators);
- new: the current code, and the ``robocds`` command's thread defaults (``robocds.threads``:
  ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it).

1. The update alone: what ``MultiTaskCQL.training_step`` does plus the optimizer (online forward with
   the DrQ shift, target forward, routing, relabeling, CQL loss, backward, gradient clipping, Adam,
   Polyak update) on one fixed synthetic batch in the training-batch layout, old and new from the same
   initial weights, in interleaved rounds (shuffled order) so machine noise hits both alike; Sharing
   All and No Sharing (new code) beside CDS for the cost of routing. Both paths use ``--threads``
   threads in this process, so this part isolates the code change.
2. A whole fit: ``robocds fit --config base --config cds --config scale_<scale>`` for ``--fit-steps``
   steps, each as its own process (old: this script with ``--fit-child old``, which swaps in the old
   shift and leaves OpenMP's wait policy unset; new: ``python -m robocds.train``), timed by wall clock
   from process start to exit (start-up, data loading, validation, checkpoints and logs included),
   alternating old/new ``--fit-repeats`` times. Transitions/s = steps x T x B / wall clock. The data
   is a small dataset of the scale's recipe (tasks, image size), generated once under ``--work``.
3. d3rlpy (optional, never a runtime dependency): ``DiscreteCQL`` with twin critics and its default
   Nature-DQN pixel encoder on T x B transitions of the same frames per update, timed in its own
   process (``--d3rlpy-python``: an interpreter where ``import d3rlpy`` works; by default this one,
   skipped if d3rlpy is not installed). Reported as robocds (new) / d3rlpy step time.

Medians over rounds; ratios old/new (> 1: the new path is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from robocds.augment import random_shift
from robocds.config import CQLConfig, EncoderConfig, SharingConfig
from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_BOOTSTRAP_STEPS,
    BATCH_EPISODE_SUCCESSES,
    BATCH_IMAGE,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_SUCCESSES,
)
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import PROPRIO_DIM
from robocds.module import MultiTaskCQL
from robocds.qnet import polyak_update
from robocds.sharing import SharingRouter

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shapes:
    """One scale's batch shapes and the configs and recipe that produce them."""

    name: str
    tasks: int  # T
    batch_size: int  # B, per task
    image_size: int
    train_config: str  # packaged training config of the scale
    recipe: str  # packaged dataset recipe of the scale


SCALES = {
    "cpu": Shapes("cpu", 5, 32, 48, "scale_cpu", "benchmark_cpu"),
    "gpu": Shapes("gpu", 9, 64, 64, "scale_gpu", "benchmark"),
}


# ---------------------------------------------------------------------------------------------- old path
def legacy_shift_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The DrQ shift before issue 13: clamped row and column indices applied with two full-size gathers."""
    n, c, h, w = images.shape
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None]).clamp_(0, h - 1)
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None]).clamp_(0, w - 1)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def legacy_random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``robocds.augment.random_shift`` before issue 13 (same random draws, same output)."""
    if pad == 0:
        return images
    offsets = torch.randint(-pad, pad + 1, (2, images.shape[0]), device=images.device, generator=generator)
    return legacy_shift_images(images, offsets[0], offsets[1])


def use_path(path: str) -> None:
    """Make the learner use the old or the new DrQ shift (the module looks it up at every step)."""
    import robocds.module

    robocds.module.random_shift = legacy_random_shift if path == "old" else random_shift


# ---------------------------------------------------------------------------------------------- 1. update
def synthetic_batch(shapes: Shapes, device: str) -> dict[str, torch.Tensor]:
    """Random frames and a reward tied to the action, in the training-batch layout (robocds.datasets.schema)."""
    g = torch.Generator().manual_seed(0)
    t, b, s = shapes.tasks, shapes.batch_size, shapes.image_size
    action = torch.randint(0, NUM_ACTIONS, (t, b), generator=g)
    rewards = (action[..., None] == torch.arange(t) % NUM_ACTIONS).float()
    batch = {
        BATCH_IMAGE: torch.randint(0, 256, (t, b, 3, s, s), generator=g, dtype=torch.uint8),
        BATCH_NEXT_IMAGE: torch.randint(0, 256, (t, b, 3, s, s), generator=g, dtype=torch.uint8),
        BATCH_PROPRIO: torch.rand(t, b, PROPRIO_DIM, generator=g),
        BATCH_NEXT_PROPRIO: torch.rand(t, b, PROPRIO_DIM, generator=g),
        BATCH_ACTION: action,
        BATCH_REWARDS: rewards,
        BATCH_SUCCESSES: rewards.clone(),
        BATCH_EPISODE_SUCCESSES: rewards.clone(),
        BATCH_STEPS_TO_SUCCESS: torch.where(rewards > 0, 0.0, torch.inf),
        BATCH_BOOTSTRAP_STEPS: torch.ones(t, b),
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_update(
    shapes: Shapes, mode: str, device: str, encoder: EncoderConfig | None = None, cql: CQLConfig | None = None
) -> Callable[[dict], None]:
    """One optimizer step of the learner, as Lightning runs it (bf16 autocast on CUDA, as --config gpu);
    ``encoder`` / ``cql``: the defaults unless given."""
    torch.manual_seed(0)  # same initial weights for every variant
    model = MultiTaskCQL(
        num_tasks=shapes.tasks,
        num_actions=NUM_ACTIONS,
        image_size=shapes.image_size,
        proprio_dim=PROPRIO_DIM,
        encoder=encoder or EncoderConfig(),
        cql=cql or CQLConfig(),
    ).to(device)
    model.train()
    router = SharingRouter(SharingConfig(mode=mode))
    optimizer = torch.optim.Adam(model.q.parameters(), lr=3e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    def update(batch: dict) -> None:
        with autocast:
            terms, _ = model.compute_terms(batch, router)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.q.parameters(), 10.0)
        optimizer.step()
        polyak_update(model.q_target, model.q, 0.005)

    return update


UPDATE_VARIANTS = (("old", "cds"), ("new", "cds"), ("new", "all"), ("new", "none"))


def measure_updates(shapes: Shapes, device: str, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per update of every (path, mode) variant, ``rounds`` interleaved rounds."""
    batch = synthetic_batch(shapes, device)
    updates = {f"{path} {mode}": make_update(shapes, mode, device) for path, mode in UPDATE_VARIANTS}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(name: str) -> float:
        use_path(name.split()[0])
        start = time.perf_counter()
        updates[name](batch)
        sync()
        return time.perf_counter() - start

    times = interleaved_times(list(updates), run, rounds, warmup)
    use_path("new")
    return times


def interleaved_times(
    names: list[str], run: Callable[[str], float], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """``run(name)``'s seconds for every name: ``warmup`` untimed passes, then ``rounds`` rounds in shuffled order
    (machine noise hits every variant alike)."""
    for _ in range(warmup):
        for name in names:
            run(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    order, rng = list(names), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            times[name].append(run(name))
    return times


# ---------------------------------------------------------------------------------------------- 2. fit
def fit_dataset(shapes: Shapes, work: Path, episodes: int) -> Path:
    """A small dataset of the scale's recipe (its tasks and image size, ``episodes`` per task), made once."""
    from robocds.datasets.generate import generate
    from robocds.datasets.recipe import load_recipe

    root = work / f"data-{shapes.name}-{episodes}"
    if not (root / "manifest.json").exists():
        recipe = load_recipe(shapes.recipe)
        recipe = replace(recipe, tasks=tuple(replace(task, episodes=episodes, components=()) for task in recipe.tasks))
        print(f"generating {root} ({len(recipe.tasks)} tasks x {episodes} episodes) ...", flush=True)
        generate(replace(recipe, episodes_per_shard=episodes), str(root), workers=0, progress=False)
    return root


def fit_arguments(shapes: Shapes, data: Path, runs: Path, name: str, steps: int, steps_per_epoch: int) -> list[str]:
    return [
        "fit", "--config", "base", "--config", "cds", "--config", shapes.train_config,
        "--data.root", str(data), "--runs_dir", str(runs), "--run_name", name,
        "--trainer.max_steps", str(steps), "--data.init_args.steps_per_epoch", str(steps_per_epoch),
        "--data.init_args.batch_size", str(shapes.batch_size), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def fit_command(path: str, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """The process of one fit on the old or the new path, and its environment."""
    env = dict(os.environ)  # the old path sets no thread default; the new command applies its own
    if path == "old":
        return [sys.executable, str(Path(__file__).resolve()), "--fit-child", "old", "--", *arguments], env
    return [sys.executable, "-m", "robocds.train", *arguments], env


def measure_fits(shapes: Shapes, args: argparse.Namespace) -> dict[str, list[float]]:
    """Wall-clock seconds of whole fits, old and new alternating (the first path alternates too)."""
    data = fit_dataset(shapes, Path(args.work), args.fit_episodes)
    times: dict[str, list[float]] = {"old": [], "new": []}
    for repeat in range(args.fit_repeats):
        for path in ("old", "new") if repeat % 2 == 0 else ("new", "old"):
            runs = Path(args.work) / "runs"
            arguments = fit_arguments(shapes, data, runs, f"{shapes.name}-{path}", args.fit_steps, args.fit_epoch_steps)
            command, env = fit_command(path, arguments)
            start = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"the {path} fit failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
            times[path].append(seconds)
            print(f"  fit {shapes.name} {path}: {seconds:.1f} s", flush=True)
    return times


def fit_child(path: str, arguments: list[str]) -> None:
    """``robocds fit`` in this process on ``path`` (only "old" runs here: the new path is the real command)."""
    use_path(path)
    from robocds.train.cli import main

    main(arguments)


# ---------------------------------------------------------------------------------------------- 3. d3rlpy
D3RLPY_CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch, d3rlpy
tasks, batch, size, actions, rounds, threads = (int(v) for v in sys.argv[1:7])
torch.set_num_threads(threads)
n = tasks * batch * 4  # a small dataset of random frames (the update's cost does not depend on content)
rng = np.random.default_rng(0)
observations = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
terminals = np.zeros(n); terminals[39::40] = 1.0
dataset = d3rlpy.dataset.MDPDataset(observations, rng.integers(0, actions, n), rng.random(n), terminals)
cql = d3rlpy.algos.DiscreteCQLConfig(
    batch_size=tasks * batch, n_critics=2, observation_scaler=d3rlpy.preprocessing.PixelObservationScaler()
).create(device="cpu:0")
cql.build_with_dataset(dataset)
buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=n, episodes=dataset.episodes)
sample = buffer.sample_transition_batch(tasks * batch)
for _ in range(3):
    cql.update(sample)
times = []
for _ in range(rounds):
    start = time.perf_counter(); cql.update(sample); times.append(time.perf_counter() - start)
print(json.dumps({"version": d3rlpy.__version__, "times": times}))
"""


def measure_d3rlpy(shapes: Shapes, python: str, rounds: int, threads: int) -> dict | None:
    """d3rlpy's DiscreteCQL update times on the scale's shapes, or None (with a note) if it cannot run."""
    argv = [str(v) for v in (shapes.tasks, shapes.batch_size, shapes.image_size, NUM_ACTIONS, rounds, threads)]
    done = subprocess.run([python, "-c", D3RLPY_CHILD, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        print(f"  d3rlpy reference skipped ({python}): {reason}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def report_updates(shapes: Shapes, times: dict[str, list[float]], d3rlpy: dict | None) -> dict:
    transitions = shapes.tasks * shapes.batch_size
    print(f"\nupdate alone, {shapes.name} shapes (T={shapes.tasks}, B={shapes.batch_size}, {shapes.image_size}x"
          f"{shapes.image_size}): {transitions} transitions per update, {len(times['new cds'])} rounds")  # fmt: skip
    print(f"{'path / mode':<12} {'median (ms)':>12} {'transitions/s':>14}")
    for name, values in times.items():
        print(f"{name:<12} {median_ms(values):>12.1f} {transitions / statistics.median(values):>14.0f}")
    ratio = statistics.median(times["old cds"]) / statistics.median(times["new cds"])
    print(f"old / new (cds): {ratio:.2f}x   cds / all (new): "
          f"{statistics.median(times['new cds']) / statistics.median(times['new all']):.3f}")  # fmt: skip
    out = {"median_ms": {k: median_ms(v) for k, v in times.items()}, "old_over_new": ratio}
    if d3rlpy is not None:
        d3_ms = median_ms(d3rlpy["times"])
        out["d3rlpy_median_ms"] = d3_ms
        print(f"d3rlpy {d3rlpy['version']} DiscreteCQL ({transitions} transitions per update, 1 task): {d3_ms:.1f} ms; "
              f"robocds (new cds) / d3rlpy = {median_ms(times['new cds']) / d3_ms:.2f}")  # fmt: skip
    return out


def report_fits(shapes: Shapes, times: dict[str, list[float]], steps: int) -> dict:
    transitions = steps * shapes.tasks * shapes.batch_size
    runs = len(times["new"])
    print(f"\nwhole fit, {shapes.name} shapes: {steps} steps = {transitions} transitions, {runs} fits per path")
    for path, values in times.items():
        print(f"{path:<4} median {statistics.median(values):7.1f} s  {transitions / statistics.median(values):8.0f} "
              f"transitions/s  (runs: {', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip
    ratio = statistics.median(times["old"]) / statistics.median(times["new"])
    print(f"old / new: {ratio:.2f}x end-to-end throughput")
    return {"seconds": times, "old_over_new": ratio}


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=["cpu", "gpu"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device of the update timings")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of part 1 and 3")
    parser.add_argument("--rounds", type=int, default=20, help="timed update rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates per variant")
    parser.add_argument("--fit-steps", type=int, default=300, help="steps of each whole fit (0: no fits)")
    parser.add_argument("--fit-epoch-steps", type=int, default=150, help="steps between validations/checkpoints")
    parser.add_argument("--fit-repeats", type=int, default=2, help="fits per path and scale")
    parser.add_argument("--fit-episodes", type=int, default=4, help="episodes per task of the fits' dataset")
    parser.add_argument("--work", default="outputs/bench_training", help="folder of the fits' data and runs")
    parser.add_argument("--d3rlpy-python", default=sys.executable, help="interpreter with d3rlpy installed")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--fit-child", choices=["old"], help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.fit_child:
        fit_child(args.fit_child, [a for a in rest if a != "--"])
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s) "
          f"for the update timings, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {load_average()} at start")  # fmt: skip
    results: dict = {}
    for name in args.scales:
        shapes = SCALES[name]
        d3rlpy = measure_d3rlpy(shapes, args.d3rlpy_python, args.rounds, args.threads) if args.device == "cpu" else None
        updates = measure_updates(shapes, args.device, args.rounds, args.warmup)
        results[name] = {"update": report_updates(shapes, updates, d3rlpy)}
    for name in args.scales if args.fit_steps > 0 else []:
        shapes = SCALES[name]
        results[name]["fit"] = report_fits(shapes, measure_fits(shapes, args), args.fit_steps)
    print(f"\nload average {load_average()} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
