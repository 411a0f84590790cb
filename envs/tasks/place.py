"""``place-<object>-<zone>``: grasp the named object and leave it resting inside the named zone."""

from __future__ import annotations

import numpy as np

from robocds.envs.actions import STEP_Z, Action
from robocds.envs.arm import GRASP_WRIST_Z, KukaGripperArm
from robocds.envs.scene import ZONES, SceneState
from robocds.envs.tasks.base import HOVER_WRIST_Z, Task, grasp_action, move_towards

RESTING_HEIGHT = 0.01  # an object whose bottom is below this (metres) rests on the table
# Carrying height: one step above hover, so a held object clears the tallest object (8 cm block).
CARRY_WRIST_Z = HOVER_WRIST_Z + STEP_Z


class PlaceTask(Task):
    def __init__(self, object_name: str, zone_name: str) -> None:
        super().__init__(object_name)
        zones = {zone.name: zone for zone in ZONES}
        if zone_name not in zones:
            raise ValueError(f"unknown zone {zone_name!r}; the scene has {sorted(zones)}")
        self.zone = zones[zone_name]

    @property
    def name(self) -> str:
        return f"place-{self.object_name}-{self.zone.name}"

    def success(self, state: SceneState) -> bool:
        i = self.object_index
        released = not state.touching[i].any()
        resting = state.object_heights[i] < RESTING_HEIGHT
        return bool(released and resting and self.zone.contains(state.object_positions[i, :2]))

    def oracle_action(self, state: SceneState, arm: KukaGripperArm, error: np.ndarray) -> Action:
        grasp = grasp_action(state, self.object_index, error)
        if grasp is not None:
            return grasp
        # Holding it: carry it at carrying height over the zone, lower it, let go. The object
        # swings a little in the fingers, so steer by the grasp target; the zone is wide enough.
        lateral = move_towards(np.asarray(self.zone.center) + error, state.grasp_target[:2])
        if lateral is None:
            return Action.DOWN if state.wrist_target[2] > GRASP_WRIST_Z + STEP_Z * 1.5 else Action.OPEN
        return Action.UP if state.wrist_target[2] < CARRY_WRIST_Z - STEP_Z / 2 else lateral
