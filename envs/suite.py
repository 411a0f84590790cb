"""What readers and learners need to know of the task suite, without loading the simulator.

Task names, the proprio size, the env settings that shape an observation and their one set of
defaults, the camera poses and the oracle-noise settings live here; nothing in this module imports
pybullet, so reading shards and training never load it (a test checks). ``robocds.envs.tasks``
builds the tasks and checks that their names are these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from robocds.envs.actions import ACTION_NAMES, DEFAULT_SUBSTEPS
from robocds.errors import ConfigError

OBJECT_NAMES: tuple[str, ...] = ("cube", "cylinder", "block")  # the scene's graspable objects, in scene order
ZONE_NAMES: tuple[str, ...] = ("blue", "purple")  # the painted target zones
TASK_NAMES: tuple[str, ...] = (
    *(f"lift-{obj}" for obj in OBJECT_NAMES),
    *(f"place-{obj}-{zone}" for obj in OBJECT_NAMES for zone in ZONE_NAMES),
)

# Measured grasp point xyz and fingertip gap, then the commanded grasp point xyz and gripper command
# (see robocds.envs.env for why the command is part of the observation).
PROPRIO_DIM = 8

RENDERERS = ("tiny", "egl")  # TinyRenderer (CPU) or pybullet's EGL plugin (GPU machines)
MIN_IMAGE_SIZE = 16  # pixels: the camera refuses smaller frames


def check_task(name: str) -> str:
    """``name`` if it is a task of the suite; a ``ValueError`` listing the valid names otherwise."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    return name


def task_index(name: str) -> int:
    """Position of task ``name`` in ``TASK_NAMES`` (the order of per-task reward vectors)."""
    return TASK_NAMES.index(check_task(name))


CAMERA_MOUNTS = ("world", "gripper")  # what a camera pose is relative to


@dataclass(frozen=True)
class CameraPose:
    """Where a camera looks from (pybullet's yaw/pitch/distance around a target) and its field of view.

    ``mount`` says what the pose is relative to: ``"world"`` (a fixed camera; ``target`` is a world point) or
    ``"gripper"`` (eye-in-hand: ``target`` is an offset from the grasp point, so the camera moves with the
    gripper and the gripper-object offset is read at the same place of every frame).
    """

    target: tuple[float, float, float]  # xyz the camera looks at (metres): world point, or offset from the grasp point
    distance: float  # metres from the target
    yaw: float  # degrees
    pitch: float  # degrees (negative: looking down)
    fov: float  # vertical field of view, degrees
    mount: str = "world"  # one of CAMERA_MOUNTS

    def __post_init__(self) -> None:
        if self.mount not in CAMERA_MOUNTS:
            raise ValueError(f"mount={self.mount!r}: must be one of {CAMERA_MOUNTS}")


CAMERAS: dict[str, CameraPose] = {
    # The policy's view: the table centre from in front of the arm and above; gripper, objects and zones in frame.
    "front": CameraPose(target=(0.55, 0.0, 0.04), distance=0.6, yaw=90.0, pitch=-60.0, fov=55.0),
    # The policy's eye-in-hand view: 10 cm behind and 12 cm above the grasp point, looking forward and down
    # past the open fingers; an object between them spans ~8 px of a 48 px frame (2-3 px from "front").
    "wrist": CameraPose(target=(0.03, 0.0, -0.03), distance=0.1985, yaw=-90.0, pitch=-49.1, fov=70.0, mount="gripper"),
    # A person's view for videos: the arm and the table from the side, wider.
    "viewer": CameraPose(target=(0.5, 0.0, 0.05), distance=1.1, yaw=50.0, pitch=-38.0, fov=50.0),
}


@dataclass(frozen=True)
class OracleNoise:
    """How badly a scripted oracle behaves, for datasets of graded quality."""

    random_action_prob: float = 0.0  # probability of replacing the oracle's action by a uniform one
    position_std: float = 0.0  # std (metres) of a per-episode xy error in where it thinks things are

    def __post_init__(self) -> None:
        if not 0.0 <= self.random_action_prob <= 1.0:
            raise ValueError(f"random_action_prob={self.random_action_prob}: must be in [0, 1]")
        if not self.position_std >= 0.0:
            raise ValueError(f"position_std={self.position_std}: must be >= 0")


@dataclass(frozen=True)
class EnvSettings:
    """Every env setting that shapes an observation or an episode; recorded in the manifest and the checkpoint.

    The defaults here are the only ones: the env, recipes, evaluation and the demo all read them.
    """

    image_size: int = 64  # camera resolution: frames are image_size x image_size RGB
    max_steps: int = 40  # horizon: episodes are truncated after this many actions
    substeps: int = DEFAULT_SUBSTEPS  # physics steps per action (120 Hz: 0.1 s per action)
    renderer: str = "tiny"  # "tiny" (CPU) or "egl" (GPU machines); frames differ slightly between them
    camera: str = "front"  # a name from CAMERAS: the policy's viewpoint
    actions: tuple[str, ...] = ACTION_NAMES  # the action set, index = action id

    def __post_init__(self) -> None:
        # ConfigError (a ValueError): a bad setting given on a command line is reported as one line.
        for name, low in (("image_size", MIN_IMAGE_SIZE), ("max_steps", 1), ("substeps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r}: must be an int >= {low}")
        if self.renderer not in RENDERERS:
            raise ConfigError(f"renderer={self.renderer!r}: must be one of {RENDERERS}")
        if self.camera not in CAMERAS:
            raise ConfigError(f"camera={self.camera!r}: must be one of {tuple(CAMERAS)}")
        if tuple(self.actions) != ACTION_NAMES:
            raise ConfigError(f"actions={list(self.actions)}: this code's action set is {list(ACTION_NAMES)}")

    def to_json_dict(self) -> dict[str, Any]:
        return {**asdict(self), "actions": list(self.actions)}

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``ManipulationEnv`` and ``gymnasium.make("robocds/<task>-v0", ...)`` that build
        the env these settings describe (the action set is not one: it is checked, never chosen)."""
        return {
            "image_size": self.image_size,
            "max_steps": self.max_steps,
            "renderer": self.renderer,
            "substeps": self.substeps,
            "camera": self.camera,
        }

    @classmethod
    def from_json_dict(cls, data: Any) -> EnvSettings:
        """Settings as read from a manifest or a checkpoint; a ``ValueError`` names the bad setting and value."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of settings, got {data!r}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise ValueError(f"{key}: unknown setting (known: {', '.join(known)})")
        for key in known:
            if key not in data:
                raise ValueError(f"{key}: missing")
        if not isinstance(data["actions"], (list, tuple)):
            raise ValueError(f"actions={data['actions']!r}: expected a list of action names")
        return cls(**{**data, "actions": tuple(data["actions"])})

    def differences(self, other: EnvSettings) -> list[str]:
        """``name: mine vs other`` for every setting that differs."""
        return [
            f"{f.name}={getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


DEFAULT_ENV = EnvSettings()
