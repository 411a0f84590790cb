"""What every task is: a success test on the true scene state, and a scripted oracle.

The oracles are stateless given the scene (they re-plan from the true state at every step), so a
random action injected as noise is simply recovered from; the only per-episode state is the
positional error drawn at ``reset``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from robocds.envs.actions import NUM_ACTIONS, STEP_XY, STEP_Z, Action
from robocds.envs.arm import GRASP_WRIST_Z, KukaGripperArm
from robocds.envs.scene import OBJECTS, SceneState
from robocds.envs.suite import OracleNoise

HOVER_WRIST_Z = GRASP_WRIST_Z + 2 * STEP_Z  # carrying height: a held object clears the others


class Task(ABC):
    """One task of the suite; every task shares the same scene distribution."""

    def __init__(self, object_name: str) -> None:
        names = [spec.name for spec in OBJECTS]
        if object_name not in names:
            raise ValueError(f"unknown object {object_name!r}; the scene has {names}")
        self.object_name = object_name
        self.object_index = names.index(object_name)

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def success(self, state: SceneState) -> bool:
        """Whether the task is solved in this state (the reward is 1 exactly then)."""

    @abstractmethod
    def oracle_action(self, state: SceneState, arm: KukaGripperArm, error: np.ndarray) -> Action:
        """The scripted expert's action; ``error`` [2] is its per-episode xy misperception."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ScriptedOracle:
    """Noisy expert for one task: plays ``task.oracle_action`` with the configured noise."""

    def __init__(self, task: Task, noise: OracleNoise = OracleNoise(), seed: int | None = None) -> None:
        self.task = task
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.error = np.zeros(2)

    def reset(self) -> None:
        """Draw this episode's positional error; call after each ``env.reset``."""
        self.error = self.rng.normal(0.0, self.noise.position_std, size=2) if self.noise.position_std else np.zeros(2)

    def act(self, env) -> int:
        """Action for ``env`` (a ManipulationEnv or a wrapper of one) in its current state."""
        if self.noise.random_action_prob and self.rng.random() < self.noise.random_action_prob:
            return int(self.rng.integers(NUM_ACTIONS))
        scene = env.unwrapped.scene
        return int(self.task.oracle_action(scene.state(), scene.arm, self.error))


def move_towards(target_xy: np.ndarray, current_xy: np.ndarray) -> Action | None:
    """The lateral action that most reduces the larger axis error, or None when within half a step."""
    delta = np.asarray(target_xy) - np.asarray(current_xy)
    axis = int(np.argmax(np.abs(delta)))
    if abs(delta[axis]) <= STEP_XY / 2:
        return None
    if axis == 0:
        return Action.X_PLUS if delta[0] > 0 else Action.X_MINUS
    return Action.Y_PLUS if delta[1] > 0 else Action.Y_MINUS


def grasp_action(state: SceneState, index: int, error: np.ndarray) -> Action | None:
    """Next action of a top-down pinch of object ``index``, or None once the gripper has it.

    Approach at hover height, descend to the grasp height, close; a closed gripper touching the
    object is left to the caller (lift it); a closed gripper that missed opens and tries again.
    """
    if state.closing:
        return None if state.touching[index].any() else Action.OPEN
    lateral = move_towards(state.object_positions[index, :2] + error, state.grasp_target[:2])
    at_grasp_height = state.wrist_target[2] < GRASP_WRIST_Z + STEP_Z / 2
    if lateral is not None:
        # Never sweep across the table at grasp height: rise first, then move.
        return Action.UP if state.wrist_target[2] < HOVER_WRIST_Z - STEP_Z / 2 else lateral
    return Action.CLOSE if at_grasp_height else Action.DOWN
