"""Playing one scripted-oracle episode, shared by the demo, the oracle benchmark and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robocds.envs.env import ManipulationEnv
from robocds.envs.tasks import ScriptedOracle


@dataclass
class OracleEpisode:
    success: bool  # the env's own task was solved (the episode terminated)
    length: int  # number of steps taken
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 [H, W, 3] per state, if kept


def play_oracle_episode(
    env: ManipulationEnv, oracle: ScriptedOracle, seed: int, keep_frames: bool = False
) -> OracleEpisode:
    """Reset ``env`` with ``seed`` and let ``oracle`` act until the episode ends."""
    obs, _ = env.reset(seed=seed)
    oracle.reset()
    episode = OracleEpisode(False, 0, [obs["image"]] if keep_frames else [])
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(oracle.act(env))
        episode.length += 1
        if keep_frames:
            episode.frames.append(obs["image"])
        episode.success = bool(terminated)
        done = terminated or truncated
    return episode
