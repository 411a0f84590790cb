"""The KUKA iiwa arm with its two-finger gripper, driven in end-effector space through IK.

Joint indices, limits and rest poses follow the arm description shipped in ``pybullet_data``
(``kuka_iiwa/kuka_with_gripper2.sdf``): joints 0-6 are the arm, 7 the gripper's wrist yaw,
8/11 the two finger hinges and 10/13 the finger tips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robocds.envs.bullet import BulletClient, pybullet_data

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
WRIST_LINK = 6  # lbr_iiwa_link_7: the link whose position the IK targets
BASE_POSITION = (-0.10, 0.0, 0.0)  # the arm stands 10 cm behind the table edge so it can reach its near side
GRIPPER_YAW_JOINT = 7
LEFT_FINGER, RIGHT_FINGER = 8, 11
LEFT_TIP, RIGHT_TIP = 10, 13
FINGER_LINKS = (8, 9, 10, 11, 12, 13)

# Null-space IK settings: limits and rest pose keep the elbow up and the wrist over the table.
_LOWER = [-0.967, -2.0, -2.96, 0.19, -2.96, -2.09, -3.05]
_UPPER = [0.967, 2.0, 2.96, 2.29, 2.96, 2.09, 3.05]
_RANGES = [5.8, 4.0, 5.8, 4.0, 5.8, 4.0, 6.0]
_REST = [0.0, 0.0, 0.0, 0.5 * math.pi, 0.0, -math.pi * 0.5 * 0.66, 0.0]
# The fingers close along the world y axis, the direction objects are carried to the zones, so a
# carried object is pushed by the finger faces rather than dragged by friction alone.
GRIPPER_YAW = 0.5 * math.pi
_DOWN = (0.0, 1.0, 0.0, 0.0)  # quaternion of euler (0, -pi, 0): the gripper points down
# Elbow-up seed for the IK at reset (pybullet's reference pose); solving from all-zero joints
# lands on a folded branch outside the joint limits.
_SEED = [0.006418, 0.413184, -0.011401, -1.589317, 0.005379, 1.137684, -0.006539]


# Wrist height at which the closed fingertips stay 1.5 cm above the table: low enough to grasp every
# object, high enough that the fingers never press on the table (which would stop them closing).
GRASP_WRIST_Z = 0.30
# The grasp point (midway between the fingertips) sits this far from the wrist in the world frame.
GRASP_POINT_OFFSET = np.array([0.022, 0.0, -0.25])


@dataclass(frozen=True)
class ArmLimits:
    """Box the wrist target is clipped to, in world metres (the arm never leaves the table)."""

    low: tuple[float, float, float] = (0.40, -0.30, GRASP_WRIST_Z)
    high: tuple[float, float, float] = (0.72, 0.30, GRASP_WRIST_Z + 0.16)


class KukaGripperArm:
    """Position-controlled KUKA arm: a wrist target in world space plus an open/closed gripper.

    Finger forces are small (a few newtons), as in the arm's reference controller, so an object
    is held only by friction between the fingers and its faces.
    """

    OPEN_ANGLE = 0.3  # finger hinge angle (rad) of a fully open gripper
    MAX_FORCE = 200.0  # arm joint motors (N m)
    FINGER_FORCES = (2.0, 2.5, 2.0)  # left hinge, right hinge, tips (N m), as in pybullet's kuka.py

    def __init__(self, client: BulletClient, limits: ArmLimits = ArmLimits()) -> None:
        self.client = client
        self.limits = limits
        self.body = client.loadSDF(pybullet_data.getDataPath() + "/kuka_iiwa/kuka_with_gripper2.sdf")[0]
        client.resetBasePositionAndOrientation(self.body, list(BASE_POSITION), [0.0, 0.0, 0.0, 1.0])
        self.num_joints = client.getNumJoints(self.body)
        self.target = np.zeros(3)
        self.finger_angle = self.OPEN_ANGLE

    def home(self, wrist_xyz: np.ndarray) -> None:
        """Teleport the arm to an IK pose above ``wrist_xyz`` with the gripper open (reset only)."""
        self.target = np.clip(np.asarray(wrist_xyz, dtype=np.float64), self.limits.low, self.limits.high)
        self.finger_angle = self.OPEN_ANGLE
        joints = _SEED
        for _ in range(2):  # re-solve from the reset pose so the IK converges on the seed's branch
            for joint, angle in zip(ARM_JOINTS, joints):
                self.client.resetJointState(self.body, joint, angle)
            joints = self._solve_ik(self.target)
        for joint, angle in zip(ARM_JOINTS, joints):
            self.client.resetJointState(self.body, joint, angle)
        self.client.resetJointState(self.body, GRIPPER_YAW_JOINT, GRIPPER_YAW)
        self.client.resetJointState(self.body, LEFT_FINGER, -self.OPEN_ANGLE)
        self.client.resetJointState(self.body, RIGHT_FINGER, self.OPEN_ANGLE)
        self._drive(joints)

    def command(self, wrist_delta: np.ndarray, finger_angle: float | None) -> None:
        """Move the wrist target by ``wrist_delta`` (metres) and, if given, set the finger angle."""
        self.target = np.clip(self.target + wrist_delta, self.limits.low, self.limits.high)
        if finger_angle is not None:
            self.finger_angle = finger_angle
        self._drive(self._solve_ik(self.target))

    @property
    def closing(self) -> bool:
        """Whether the last gripper command was ``close``."""
        return self.finger_angle < self.OPEN_ANGLE / 2

    def measure(self) -> tuple[np.ndarray, float]:
        """Wrist world position [3] and the distance between the fingertips (metres)."""
        wrist, left, right = self.client.getLinkStates(self.body, [WRIST_LINK, LEFT_TIP, RIGHT_TIP])
        gap = float(np.linalg.norm(np.subtract(left[4], right[4])))
        return np.asarray(wrist[4]), gap

    def _solve_ik(self, wrist_xyz: np.ndarray) -> list[float]:
        joints = self.client.calculateInverseKinematics(
            self.body,
            WRIST_LINK,
            wrist_xyz.tolist(),
            _DOWN,
            _LOWER,
            _UPPER,
            _RANGES,
            _REST,
            maxNumIterations=20,
            residualThreshold=1e-4,
        )
        return list(joints[: len(ARM_JOINTS)])

    def _drive(self, arm_joints: list[float]) -> None:
        c, a = self.client, self.finger_angle
        left, right, tip = self.FINGER_FORCES
        c.setJointMotorControlArray(
            self.body,
            list(ARM_JOINTS) + [GRIPPER_YAW_JOINT],
            c.POSITION_CONTROL,
            targetPositions=arm_joints + [GRIPPER_YAW],
            forces=[self.MAX_FORCE] * (len(ARM_JOINTS) + 1),
        )
        c.setJointMotorControlArray(
            self.body,
            [LEFT_FINGER, RIGHT_FINGER, LEFT_TIP, RIGHT_TIP],
            c.POSITION_CONTROL,
            targetPositions=[-a, a, 0.0, 0.0],
            forces=[left, right, tip, tip],
        )
