"""Success rate of every task's scripted oracle over seeded episodes (generation seeds).

python benchmarks/oracle_success.py --episodes 50 --random-action-prob 0 --position-std 0
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from robocds.envs.env import ManipulationEnv
from robocds.envs.rollout import play_oracle_episode
from robocds.envs.seeds import data_episode_seed
from robocds.envs.tasks import TASK_NAMES, OracleNoise, ScriptedOracle, get_task


def oracle_success_rate(task: str, episodes: int, noise: OracleNoise, base_seed: int = 0) -> tuple[float, float]:
    """(success rate, mean episode length) of ``task``'s oracle over ``episodes`` seeded episodes."""
    env = ManipulationEnv(task)
    oracle = ScriptedOracle(get_task(task), noise, seed=base_seed)
    results = [
        play_oracle_episode(env, oracle, data_episode_seed(base_seed, TASK_NAMES.index(task), episode))
        for episode in range(episodes)
    ]
    env.close()
    return sum(r.success for r in results) / episodes, sum(r.length for r in results) / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--random-action-prob", type=float, default=0.0)
    parser.add_argument("--position-std", type=float, default=0.0)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    args = parser.parse_args()
    noise = OracleNoise(args.random_action_prob, args.position_std)
    print(f"| task | success ({args.episodes} episodes) | mean length |")
    print("|---|---|---|")
    for task in tqdm(args.tasks, desc="tasks", leave=False):
        rate, length = oracle_success_rate(task, args.episodes, noise)
        tqdm.write(f"| {task} | {rate:.0%} | {length:.1f} |")


if __name__ == "__main__":
    main()
