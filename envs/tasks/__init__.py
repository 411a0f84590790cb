"""The task suite: every ``lift-<object>`` and ``place-<object>-<zone>`` over the shared scene."""

from __future__ import annotations

from robocds.envs.scene import OBJECTS, ZONES
from robocds.envs.suite import TASK_NAMES, OracleNoise, task_index
from robocds.envs.tasks.base import ScriptedOracle, Task
from robocds.envs.tasks.lift import LiftTask
from robocds.envs.tasks.place import PlaceTask

TASKS: tuple[Task, ...] = (
    *(LiftTask(obj.name) for obj in OBJECTS),
    *(PlaceTask(obj.name, zone.name) for obj in OBJECTS for zone in ZONES),
)
# Readers know the suite by name only (robocds.envs.suite); the simulated tasks must be exactly those.
assert tuple(task.name for task in TASKS) == TASK_NAMES, "robocds.envs.suite.TASK_NAMES is out of date"


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error lists the valid names otherwise."""
    return TASKS[task_index(name)]


__all__ = ["TASKS", "TASK_NAMES", "OracleNoise", "ScriptedOracle", "Task", "get_task", "task_index"]
