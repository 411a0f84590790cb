"""Recording one episode in the simulator with a scripted oracle (dataset generation only).

The episode is a pure function of (task, noise, base seed, episode index) and the env settings.
"""

from __future__ import annotations

import numpy as np

from robocds.datasets.episode import Episode
from robocds.datasets.schema import SCHEMA_VERSION, EpisodeMeta
from robocds.envs.env import INFO_TASK_REWARDS, INFO_TASK_SUCCESSES, ManipulationEnv
from robocds.envs.rollout import play_oracle_episode
from robocds.envs.seeds import data_episode_seed, oracle_seed
from robocds.envs.suite import TASK_NAMES, OracleNoise, task_index
from robocds.envs.tasks import ScriptedOracle, get_task


def record_episode(env: ManipulationEnv, noise: OracleNoise, base_seed: int, episode: int) -> Episode:
    """Play episode ``episode`` of ``env``'s task with a scripted oracle of the given noise.

    The episode is a pure function of (task, noise, base_seed, episode) and the env settings: the
    reset seed comes from ``data_episode_seed`` and the oracle gets a fresh RNG derived from it.
    """
    task = env.task.name
    seed = data_episode_seed(base_seed, task_index(task), episode)
    o_seed = oracle_seed(seed)
    played = play_oracle_episode(env, ScriptedOracle(get_task(task), noise, seed=o_seed), seed, keep=True)
    own = task_index(task)
    task_rewards = np.asarray([info[INFO_TASK_REWARDS] for info in played.infos], dtype=np.float32)
    meta = EpisodeMeta(
        schema_version=SCHEMA_VERSION,
        task=task,
        episode=episode,
        seed=seed,
        oracle_seed=o_seed,
        random_action_prob=float(noise.random_action_prob),
        position_std=float(noise.position_std),
        length=played.length,
        success=played.success,
        episode_return=float(task_rewards[:, own].sum()),
        image_size=int(played.observations[0]["image"].shape[0]),
        reward_tasks=TASK_NAMES,
    )
    return Episode(
        frames=np.stack([obs["image"] for obs in played.observations]).astype(np.uint8, copy=False),
        proprio=np.stack([obs["proprio"] for obs in played.observations]).astype(np.float32, copy=False),
        actions=np.asarray(played.actions, dtype=np.int64),
        task_rewards=task_rewards,
        task_successes=np.asarray([info[INFO_TASK_SUCCESSES] for info in played.infos], dtype=bool),
        terminated=np.asarray(played.terminated, dtype=bool),
        truncated=np.asarray(played.truncated, dtype=bool),
        meta=meta,
    )
