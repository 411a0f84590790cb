"""Gymnasium ids for every task: ``robocds/<task>-v0``, e.g. ``gymnasium.make("robocds/lift-cube-v0")``."""

from __future__ import annotations

import gymnasium as gym

from robocds.envs.suite import TASK_NAMES

ENV_ID_PREFIX = "robocds/"


def env_id(task: str) -> str:
    return f"{ENV_ID_PREFIX}{task}-v0"


def register_all() -> None:
    """Register every task once; safe to call again."""
    for task in TASK_NAMES:
        if env_id(task) not in gym.registry:
            # The env truncates at its own max_steps, so no TimeLimit wrapper is added on top.
            gym.register(id=env_id(task), entry_point="robocds.envs.env:ManipulationEnv", kwargs={"task": task})
