"""Training step time of No Sharing, Sharing All and CDS, measured side by side in one run.

    .venv/bin/python benchmarks/bench_training.py                 # CPU, then GPU if one is present
    .venv/bin/python benchmarks/bench_training.py --device cuda --batch-size 128

One step = what ``MultiTaskCQL.training_step`` does plus the optimizer: online forward over all T x B
observations (DrQ shift on), target forward over the next observations, routing, relabeling, CQL
loss, backward, gradient clipping, Adam step, Polyak update. The three modes run the same network
from the same initial weights on the same synthetic batch; steps are interleaved (one step of each
mode per round, in a shuffled order) so machine noise hits all modes alike. Reported: median step
time per mode, the ratios cds/all and none/all, and transitions/s (T x B per step / median).
On CUDA the step runs under bf16 autocast, as ``trainer.precision: bf16-mixed`` does.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch

from robocds.config import CQLConfig, EncoderConfig, SharingConfig
from robocds.datasets.schema import (
    BATCH_ACTION,
    BATCH_IMAGE,
    BATCH_NEXT_IMAGE,
    BATCH_NEXT_PROPRIO,
    BATCH_PROPRIO,
    BATCH_REWARDS,
    BATCH_SUCCESSES,
)
from robocds.envs.suite import PROPRIO_DIM
from robocds.module import MultiTaskCQL
from robocds.qnet import polyak_update
from robocds.sharing import SharingRouter

MODES = ("none", "all", "cds")


def synthetic_batch(num_tasks: int, batch_size: int, image_size: int, num_actions: int, device: str) -> dict:
    """Random frames and a reward signal tied to the action, in the training-batch layout."""
    g = torch.Generator().manual_seed(0)
    t, b, s = num_tasks, batch_size, image_size
    action = torch.randint(0, num_actions, (t, b), generator=g)
    rewards = (action[..., None] == torch.arange(t) % num_actions).float()
    batch = {
        BATCH_IMAGE: torch.randint(0, 256, (t, b, 3, s, s), generator=g, dtype=torch.uint8),
        BATCH_NEXT_IMAGE: torch.randint(0, 256, (t, b, 3, s, s), generator=g, dtype=torch.uint8),
        BATCH_PROPRIO: torch.rand(t, b, PROPRIO_DIM, generator=g),
        BATCH_NEXT_PROPRIO: torch.rand(t, b, PROPRIO_DIM, generator=g),
        BATCH_ACTION: action,
        BATCH_REWARDS: rewards,
        BATCH_SUCCESSES: rewards.clone(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_step(mode: str, args: argparse.Namespace, device: str) -> Callable[[dict], None]:
    torch.manual_seed(0)  # same initial weights in every mode
    model = MultiTaskCQL(
        num_tasks=args.tasks,
        num_actions=args.actions,
        image_size=args.image_size,
        proprio_dim=PROPRIO_DIM,
        encoder=EncoderConfig(),
        cql=CQLConfig(),
    ).to(device)
    model.train()
    router = SharingRouter(SharingConfig(mode=mode))
    optimizer = torch.optim.Adam(model.q.parameters(), lr=3e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    def step(batch: dict) -> None:
        with autocast:
            terms, _ = model.compute_terms(batch, router)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.q.parameters(), 10.0)
        optimizer.step()
        polyak_update(model.q_target, model.q, 0.005)

    return step


def measure(args: argparse.Namespace, device: str) -> dict:
    batch = synthetic_batch(args.tasks, args.batch_size, args.image_size, args.actions, device)
    steps = {mode: make_step(mode, args, device) for mode in MODES}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(args.warmup):
        for mode in MODES:
            steps[mode](batch)
    sync()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    order = list(MODES)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for mode in order:
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                steps[mode](batch)
            sync()
            times[mode].append((time.perf_counter() - start) / args.steps_per_round)
    transitions = args.tasks * args.batch_size
    median = {mode: statistics.median(times[mode]) for mode in MODES}
    return {
        "device": device,
        "transitions_per_step": transitions,
        "median_step_ms": {mode: 1e3 * median[mode] for mode in MODES},
        "transitions_per_s": {mode: transitions / median[mode] for mode in MODES},
        "ratio_cds_over_all": median["cds"] / median["all"],
        "ratio_none_over_all": median["none"] / median["all"],
    }


def report(result: dict) -> None:
    print(f"\n{result['device']}: {result['transitions_per_step']} transitions per step")
    print(f"{'mode':<6} {'median step (ms)':>17} {'transitions/s':>14}")
    for mode in MODES:
        print(f"{mode:<6} {result['median_step_ms'][mode]:>17.2f} {result['transitions_per_s'][mode]:>14.0f}")
    print(f"cds / all  = {result['ratio_cds_over_all']:.3f}   (target <= 1.10)")
    print(f"none / all = {result['ratio_none_over_all']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CPU, then CUDA if any")
    parser.add_argument("--tasks", type=int, default=9)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="per task (default: 32 on CPU, 256 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default: 40 on CPU, 50 on CUDA)")
    parser.add_argument("--steps-per-round", type=int, default=None, help="steps per mode per round (1 CPU, 5 CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=str, default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} CPU thread(s)")
    if "cuda" not in devices:
        print("no GPU present: GPU figures skipped")
    results = []
    for device in devices:
        cuda = device == "cuda"
        run = argparse.Namespace(**vars(args))
        run.batch_size = args.batch_size or (256 if cuda else 32)
        run.rounds = args.rounds or (50 if cuda else 40)
        run.steps_per_round = args.steps_per_round or (5 if cuda else 1)
        if cuda:
            print(f"GPU: {torch.cuda.get_device_name()}")
        result = measure(run, device)
        result["batch_size_per_task"] = run.batch_size
        report(result)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
