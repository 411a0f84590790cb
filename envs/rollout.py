"""Playing one scripted-oracle episode: the one loop behind dataset recording, the demo and the oracle benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robocds.envs.env import ManipulationEnv
from robocds.envs.tasks import ScriptedOracle


@dataclass
class OracleEpisode:
    """One episode of L steps; the per-step lists are filled only when the episode was played with ``keep``."""

    success: bool  # the env's own task was solved (the episode terminated)
    length: int  # number of steps taken (L)
    observations: list[dict[str, np.ndarray]] = field(default_factory=list)  # L+1 observations s_0..s_L
    actions: list[int] = field(default_factory=list)  # L actions
    infos: list[dict[str, Any]] = field(default_factory=list)  # L step infos (every task's reward and success)
    terminated: list[bool] = field(default_factory=list)  # L flags
    truncated: list[bool] = field(default_factory=list)  # L flags

    @property
    def frames(self) -> list[np.ndarray]:
        """The policy camera's uint8 [H, W, 3] frame of every kept state."""
        return [obs["image"] for obs in self.observations]


def play_oracle_episode(env: ManipulationEnv, oracle: ScriptedOracle, seed: int, keep: bool = False) -> OracleEpisode:
    """Reset ``env`` with ``seed`` and let ``oracle`` act until the episode ends; ``keep`` records every step."""
    obs, _ = env.reset(seed=seed)
    oracle.reset()
    episode = OracleEpisode(False, 0, [obs] if keep else [])
    done = False
    while not done:
        action = oracle.act(env)
        obs, _, terminated, truncated, info = env.step(action)
        episode.length += 1
        if keep:
            episode.observations.append(obs)
            episode.actions.append(action)
            episode.infos.append(info)
            episode.terminated.append(terminated)
            episode.truncated.append(truncated)
        episode.success = bool(terminated)
        done = terminated or truncated
    return episode
