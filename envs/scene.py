"""The tabletop scene every task shares: the arm, three graspable objects and two target zones.

All tasks draw their episodes from this one scene distribution, so a transition recorded while
solving one task is meaningful for every other task (the premise of data sharing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robocds.envs.arm import FINGER_LINKS, GRASP_POINT_OFFSET, ArmLimits, KukaGripperArm
from robocds.envs.bullet import QuietBulletClient, pybullet_data
from robocds.envs.camera import load_egl
from robocds.envs.suite import DEFAULT_ENV

PHYSICS_HZ = 120


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable rigid body: a box or an upright cylinder resting on the table."""

    name: str
    shape: str  # "box" or "cylinder"
    half_extents: tuple[float, float, float]  # box half sizes; cylinder (radius, radius, half height)
    rgba: tuple[float, float, float, float]
    mass: float = 0.05

    @property
    def half_height(self) -> float:
        return self.half_extents[2]


@dataclass(frozen=True)
class ZoneSpec:
    """A flat square target area painted on the table (visual only: it has no collision)."""

    name: str
    center: tuple[float, float]
    half_size: float
    rgba: tuple[float, float, float, float]

    def contains(self, xy: np.ndarray) -> bool:
        return bool(np.all(np.abs(np.asarray(xy) - self.center) <= self.half_size))


OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec("cube", "box", (0.025, 0.025, 0.025), (0.85, 0.15, 0.15, 1.0)),
    ObjectSpec("cylinder", "cylinder", (0.025, 0.025, 0.025), (0.15, 0.7, 0.2, 1.0)),
    ObjectSpec("block", "box", (0.02, 0.02, 0.04), (0.95, 0.8, 0.1, 1.0)),
)
ZONES: tuple[ZoneSpec, ...] = (
    # Named by colour, not side: "left" of the robot is the right of the camera image.
    ZoneSpec("blue", (0.56, 0.21), 0.06, (0.2, 0.35, 0.95, 1.0)),
    ZoneSpec("purple", (0.56, -0.21), 0.06, (0.65, 0.25, 0.8, 1.0)),
)

# Objects spawn in the middle band of the table, clear of both zones and of each other.
SPAWN_LOW = np.array([0.47, -0.11])
SPAWN_HIGH = np.array([0.65, 0.11])
MIN_SEPARATION = 0.075
SPAWN_YAW = np.pi / 12  # objects are placed with a yaw in [-15, 15] degrees


@dataclass(frozen=True)
class SceneState:
    """True simulator state used by rewards and oracles (never given to the learner)."""

    object_positions: np.ndarray  # [num_objects, 3] world xyz of each object's centre
    object_heights: np.ndarray  # [num_objects] height of each object's bottom above the table
    wrist: np.ndarray  # [3] world xyz of the wrist link
    wrist_target: np.ndarray  # [3] where the controller is driving the wrist (a point of the action lattice)
    finger_gap: float  # distance between the fingertips (metres)
    closing: bool  # whether the gripper was last commanded to close
    touching: np.ndarray  # [num_objects, 2] bool: object touches the left / right finger

    @property
    def grasp_point(self) -> np.ndarray:
        """World xyz midway between the fingertips, [3]."""
        return self.wrist + GRASP_POINT_OFFSET

    @property
    def grasp_target(self) -> np.ndarray:
        """Where the grasp point is being driven, [3]; planners use it because it carries no lag."""
        return self.wrist_target + GRASP_POINT_OFFSET

    def held(self, index: int) -> bool:
        """Object ``index`` is pinched: the gripper is closing and both fingers touch it."""
        return self.closing and bool(self.touching[index].all())


class TabletopScene:
    """Owns one PyBullet physics client; many scenes can live in one process."""

    def __init__(
        self, substeps: int = DEFAULT_ENV.substeps, arm_limits: ArmLimits = ArmLimits(), egl: bool = False
    ) -> None:
        self.client = QuietBulletClient()
        self.substeps = substeps
        c = self.client
        if egl:
            load_egl(c)
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / PHYSICS_HZ)
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self.plane = c.loadURDF("plane.urdf")
        # A plain grey table: the checker texture's edges would be the most salient thing in a 64 px frame.
        c.changeVisualShape(self.plane, -1, textureUniqueId=-1, rgbaColor=[0.72, 0.72, 0.7, 1.0])
        self.arm = KukaGripperArm(c, arm_limits)
        self.objects = [self._make_object(spec) for spec in OBJECTS]
        for zone in ZONES:
            self._make_zone(zone)
        for body in [self.plane, *self.objects]:
            # A little rolling friction keeps a dropped cylinder from rolling off the table.
            c.changeDynamics(body, -1, lateralFriction=1.0, rollingFriction=0.01, spinningFriction=0.002)
        self._left_fingers = FINGER_LINKS[:3]
        # A snapshot of the freshly built world: every reset restores it so that an episode depends
        # on its seed only, never on the episodes run before it.
        self._initial_state = c.saveState()

    def reset(self, rng: np.random.Generator, home_wrist: np.ndarray) -> None:
        """Place the objects at random non-overlapping poses and the arm at ``home_wrist``."""
        c = self.client
        c.restoreState(self._initial_state)
        for body, spec, xy in zip(self.objects, OBJECTS, self._sample_layout(rng)):
            yaw = rng.uniform(-SPAWN_YAW, SPAWN_YAW)
            c.resetBasePositionAndOrientation(
                body, [xy[0], xy[1], spec.half_height], c.getQuaternionFromEuler([0.0, 0.0, yaw])
            )
            c.resetBaseVelocity(body, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        self.arm.home(home_wrist)
        # Refresh contacts now: otherwise the first state would report the last episode's contacts.
        c.performCollisionDetection()

    def step_physics(self) -> None:
        for _ in range(self.substeps):
            self.client.stepSimulation()

    def state(self) -> SceneState:
        c = self.client
        positions = np.array([c.getBasePositionAndOrientation(b)[0] for b in self.objects])
        touching = np.zeros((len(self.objects), 2), dtype=bool)
        for contact in c.getContactPoints(bodyA=self.arm.body):
            link, other = contact[3], contact[2]
            if link in FINGER_LINKS and other in self.objects:
                side = 0 if link in self._left_fingers else 1
                touching[self.objects.index(other), side] = True
        heights = np.array([c.getAABB(b)[0][2] for b in self.objects])
        wrist, gap = self.arm.measure()
        return SceneState(positions, heights, wrist, self.arm.target.copy(), gap, self.arm.closing, touching)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None

    def _sample_layout(self, rng: np.random.Generator) -> list[np.ndarray]:
        placed: list[np.ndarray] = []
        while len(placed) < len(OBJECTS):
            xy = rng.uniform(SPAWN_LOW, SPAWN_HIGH)
            if all(np.linalg.norm(xy - other) >= MIN_SEPARATION for other in placed):
                placed.append(xy)
        return placed

    def _make_object(self, spec: ObjectSpec) -> int:
        c = self.client
        if spec.shape == "box":
            col = c.createCollisionShape(c.GEOM_BOX, halfExtents=spec.half_extents)
            vis = c.createVisualShape(c.GEOM_BOX, halfExtents=spec.half_extents, rgbaColor=spec.rgba)
        elif spec.shape == "cylinder":
            radius, height = spec.half_extents[0], 2 * spec.half_extents[2]
            col = c.createCollisionShape(c.GEOM_CYLINDER, radius=radius, height=height)
            vis = c.createVisualShape(c.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=spec.rgba)
        else:
            raise ValueError(f"object {spec.name!r}: unknown shape {spec.shape!r} (expected 'box' or 'cylinder')")
        return c.createMultiBody(spec.mass, col, vis, basePosition=[0.0, 0.0, spec.half_height])

    def _make_zone(self, zone: ZoneSpec) -> int:
        c = self.client
        vis = c.createVisualShape(c.GEOM_BOX, halfExtents=[zone.half_size, zone.half_size, 0.001], rgbaColor=zone.rgba)
        return c.createMultiBody(0.0, -1, vis, basePosition=[zone.center[0], zone.center[1], 0.001])
