"""``lift-<object>``: grasp the named object and raise it clear of the table."""

from __future__ import annotations

import numpy as np

from robocds.envs.actions import Action
from robocds.envs.arm import KukaGripperArm
from robocds.envs.scene import SceneState
from robocds.envs.tasks.base import Task, grasp_action

LIFT_HEIGHT = 0.05  # metres between the object's bottom and the table for a lift to count


class LiftTask(Task):
    @property
    def name(self) -> str:
        return f"lift-{self.object_name}"

    def success(self, state: SceneState) -> bool:
        # Held, not merely airborne: a knocked or thrown object does not count.
        return bool(state.object_heights[self.object_index] >= LIFT_HEIGHT and state.held(self.object_index))

    def oracle_action(self, state: SceneState, arm: KukaGripperArm, error: np.ndarray) -> Action:
        grasp = grasp_action(state, self.object_index, error)
        return Action.UP if grasp is None else grasp
