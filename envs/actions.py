"""The discrete action set shared by every task.

Each action is one fixed end-effector motion (position-controlled through IK) or a gripper
command; the arm holds its target between actions. One action lasts ``substeps`` physics steps
(0.1 s: 12 steps at 120 Hz by default).

===  ========  ==============================================
id   name      effect
===  ========  ==============================================
0    x+        wrist target 4 cm away from the arm's base
1    x-        wrist target 4 cm towards the arm's base
2    y+        wrist target 4 cm to the left (towards the blue zone)
3    y-        wrist target 4 cm to the right (towards the purple zone)
4    up        wrist target 4 cm up
5    down      wrist target 4 cm down
6    close     close the fingers (a few newtons: objects are held by friction)
7    open      open the fingers
===  ========  ==============================================

Targets are clipped to the workspace box, whose floor is the grasp height, so ``down`` can never
drive the fingers into the table.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

DEFAULT_SUBSTEPS = 12  # physics steps (120 Hz) per action: one action lasts 0.1 s
STEP_XY = 0.04  # metres per lateral action
STEP_Z = 0.04  # metres per vertical action


class Action(IntEnum):
    X_PLUS = 0
    X_MINUS = 1
    Y_PLUS = 2
    Y_MINUS = 3
    UP = 4
    DOWN = 5
    CLOSE = 6
    OPEN = 7


ACTION_NAMES: tuple[str, ...] = ("x+", "x-", "y+", "y-", "up", "down", "close", "open")
NUM_ACTIONS = len(Action)

# Wrist displacement of each motion action; gripper actions move nothing.
WRIST_DELTAS = np.zeros((NUM_ACTIONS, 3))
WRIST_DELTAS[Action.X_PLUS] = (STEP_XY, 0.0, 0.0)
WRIST_DELTAS[Action.X_MINUS] = (-STEP_XY, 0.0, 0.0)
WRIST_DELTAS[Action.Y_PLUS] = (0.0, STEP_XY, 0.0)
WRIST_DELTAS[Action.Y_MINUS] = (0.0, -STEP_XY, 0.0)
WRIST_DELTAS[Action.UP] = (0.0, 0.0, STEP_Z)
WRIST_DELTAS[Action.DOWN] = (0.0, 0.0, -STEP_Z)
