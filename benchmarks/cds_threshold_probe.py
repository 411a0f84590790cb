"""Where CDS's own-data threshold sits, measured on trained checkpoints.

    .venv/bin/python benchmarks/cds_threshold_probe.py --data runs/benchmark-cpu-borrow/data \
        --target lift-cube --source place-cube-blue \
        runs/benchmark-cpu-borrow/runs/cds-seed*/version_0/checkpoints/last.ckpt

CDS shares a transition from task j into task i when Q_i(s, a) >= threshold_i, the mean of Q_i over
task i's own training batch. When task i has few episodes the Q-function memorises them, and that
mean no longer estimates task i's value. Per checkpoint this prints the mean conservative Q_i on task
i's own training data and on its held-out episodes, and the fraction of task j's training
transitions that clear a threshold taken from each.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from robocds.callbacks import data_action_q_values
from robocds.datasets.datamodule import OfflineDataModule
from robocds.eval.policy import load_checkpoint_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("checkpoints", nargs="+", help="trained CDS checkpoints (.ckpt)")
    parser.add_argument("--data", required=True, help="the dataset the checkpoints were trained on")
    parser.add_argument("--target", required=True, help="task i, whose threshold is probed")
    parser.add_argument("--source", required=True, help="task j, whose transitions are routed into i")
    parser.add_argument("--batches", type=int, default=8, help="batches per split")
    parser.add_argument("--batch-size", type=int, default=64, help="transitions per task per batch")
    args = parser.parse_args()
    torch.manual_seed(0)
    for checkpoint in args.checkpoints:
        module = load_checkpoint_policy(checkpoint, device="cpu").module
        for task in (args.target, args.source):
            if task not in module.task_names:
                raise SystemExit(f"{checkpoint}: no task {task!r}; it knows {module.task_names}")
        i, j = module.task_names.index(args.target), module.task_names.index(args.source)
        data = OfflineDataModule(
            args.data, batch_size=args.batch_size, val_batches=args.batches, seed=0,
            steps_per_epoch=args.batches, tasks=module.task_names,
        )  # fmt: skip
        data.setup("fit")
        train = data_action_q_values(module, itertools.islice(data.train_dataloader(), args.batches))
        held_out = data_action_q_values(module, itertools.islice(data.val_dataloader(), args.batches))
        own_train, own_held_out = train[i, :, i].mean(), held_out[i, :, i].mean()
        shared = train[j, :, i]
        passing_train, passing_held_out = (shared >= own_train).float().mean(), (shared >= own_held_out).float().mean()
        print(
            f"{checkpoint}: Q_{args.target} on own training data {own_train:.2f}, on own held-out data "
            f"{own_held_out:.2f}; {args.source} transitions clearing the training threshold "
            f"{passing_train:.0%}, a held-out threshold {passing_held_out:.0%}"
        )


if __name__ == "__main__":
    main()
