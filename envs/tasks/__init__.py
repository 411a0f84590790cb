"""The task suite: every ``lift-<object>`` and ``place-<object>-<zone>`` over the shared scene."""

from __future__ import annotations

from robocds.envs.scene import OBJECTS, ZONES
from robocds.envs.tasks.base import OracleNoise, ScriptedOracle, Task
from robocds.envs.tasks.lift import LiftTask
from robocds.envs.tasks.place import PlaceTask

TASKS: tuple[Task, ...] = (
    *(LiftTask(obj.name) for obj in OBJECTS),
    *(PlaceTask(obj.name, zone.name) for obj in OBJECTS for zone in ZONES),
)
TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error lists the valid names otherwise."""
    for task in TASKS:
        if task.name == name:
            return task
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")


def task_index(name: str) -> int:
    """Position of task ``name`` in ``TASK_NAMES`` (the order of per-task reward vectors)."""
    get_task(name)
    return TASK_NAMES.index(name)


__all__ = ["TASKS", "TASK_NAMES", "OracleNoise", "ScriptedOracle", "Task", "get_task", "task_index"]
