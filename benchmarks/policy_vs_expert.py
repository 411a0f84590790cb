"""Where a trained policy leaves the expert: per-step agreement on the expert's own states, and closed-loop traces.

    python benchmarks/policy_vs_expert.py --checkpoint <run>/checkpoints/last.ckpt --task place-cube-blue

1. **Expert-driven**: the noise-free scripted oracle plays ``--episodes`` evaluation-seed episodes; at every
   state the policy's greedy action is compared with the oracle's (the confusion matrix, rows = oracle's
   action) and Q(s, oracle's action) - max_a Q(s, a) is averaged. High agreement here and low success in
   closed loop means the policy fails on the states its own mistakes lead to, not on the expert's.
2. **Closed loop**: the policy plays the same number of episodes; each step prints its action, with the
   oracle's in brackets where they differ (S = success, F = failure).

Evaluation seeds come from ``robocds.envs.seeds`` (disjoint from every data seed).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from robocds.checkpoint import load_module
from robocds.envs.actions import ACTION_NAMES
from robocds.envs.env import ManipulationEnv
from robocds.envs.seeds import eval_episode_seed
from robocds.envs.suite import OracleNoise, task_index
from robocds.envs.tasks import ScriptedOracle, get_task
from robocds.eval.policy import module_env

NAMES = ACTION_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the evaluation episodes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_module(args.checkpoint)
    column = model.task_names.index(args.task)
    env = ManipulationEnv.from_settings(args.task, module_env(model, args.checkpoint))
    seeds = [eval_episode_seed(args.seed, task_index(args.task), k) for k in range(args.episodes)]

    def play(k: int, seed: int, follow_expert: bool) -> tuple[list[tuple[int, torch.Tensor]], bool]:
        """One episode: (oracle's action, the policy's Q-values [A]) at every state, and whether it succeeded;
        the oracle's action is played when ``follow_expert``, else the policy's greedy one."""
        oracle = ScriptedOracle(get_task(args.task), OracleNoise(), seed=k)
        obs, _ = env.reset(seed=seed)
        oracle.reset()
        steps, done, terminated = [], False, False
        while not done:
            expert, q = oracle.act(env), model.q_values(obs["image"], obs["proprio"])[0, column]
            steps.append((expert, q))
            obs, _, terminated, truncated, _ = env.step(expert if follow_expert else int(q.argmax()))
            done = terminated or truncated
        return steps, terminated

    confusion, margins = np.zeros((len(NAMES), len(NAMES)), dtype=int), []
    for k, seed in enumerate(seeds):
        for expert, q in play(k, seed, follow_expert=True)[0]:
            confusion[expert, int(q.argmax())] += 1
            margins.append(float(q[expert] - q.max()))
    print(f"expert-driven: agreement {np.trace(confusion) / confusion.sum():.3f} over {confusion.sum()} states; "
          f"mean Q(s, expert) - max Q(s, .) {np.mean(margins):.4f}")  # fmt: skip
    print("rows: oracle's action, columns: policy's action (" + " ".join(NAMES) + ")")
    print(confusion)

    print("closed loop: policy's action (oracle's where different)")
    for k, seed in enumerate(seeds):
        steps, success = play(k, seed, follow_expert=False)
        names = [(NAMES[int(q.argmax())], NAMES[expert]) for expert, q in steps]
        print("S" if success else "F", " ".join(mine if mine == its else f"{mine}({its})" for mine, its in names))
    env.close()


if __name__ == "__main__":
    main()
