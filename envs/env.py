"""The gymnasium environment: one task of the suite, with every task's reward in ``info``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robocds.envs.actions import NUM_ACTIONS, WRIST_DELTAS, Action
from robocds.envs.arm import GRASP_POINT_OFFSET, KukaGripperArm
from robocds.envs.camera import Camera
from robocds.envs.scene import OBJECTS, TabletopScene
from robocds.envs.suite import DEFAULT_ENV, PROPRIO_DIM, TASK_NAMES, EnvSettings
from robocds.envs.tasks import TASKS, get_task
from robocds.envs.tasks.base import HOVER_WRIST_Z

# Keys of ``info`` (the dataset schema stores these per step).
INFO_TASK_REWARDS = "task_rewards"  # float32 [num_tasks]: reward of every task of the suite
INFO_TASK_SUCCESSES = "task_successes"  # bool [num_tasks]: success of every task of the suite
INFO_SUCCESS = "is_success"  # bool: this env's own task succeeded (gymnasium/SB3 convention)

WORLD_RADIUS = 5.0  # metres: anything farther from the arm (or not finite) means the simulation blew up


class SimulationDiverged(RuntimeError):
    """The physics produced a non-finite or absurd state; the episode cannot go on."""


HOME_GRASP_POINT_XY = (0.56, 0.0)  # every episode starts with the gripper open over the table centre
# Proprio (PROPRIO_DIM = 8, robocds.envs.suite): measured grasp point xyz and fingertip gap (metres), then the
# controller's commanded grasp point xyz and gripper command (1 = close). The arm lags its target by up to a
# step, so the measured pose alone does not tell where the arm is going: without the command the observation
# is not Markov (the policy cannot tell "still descending" from "already rising") and a greedy policy oscillates.
VIEWER_SIZE = 256  # pixels of the frames ``render()`` returns (the viewer camera, for people)


class ManipulationEnv(gym.Env):
    """A KUKA arm over a table with three objects and two target zones, solving one named task.

    Observation: ``{"image": uint8 [size, size, 3], "proprio": float32 [8]}`` where proprio is the
    grasp point (midway between the fingertips) and the fingertip gap as measured, in world metres, then
    the commanded grasp point and gripper command (1 = close) that the controller is driving towards.
    Action: ``Discrete(8)``, see ``robocds.envs.actions``. Reward: 1.0 on the step the task is
    solved (the episode then terminates), else 0.0. ``info`` holds every task's reward and success
    computed from the same simulator state, so a transition can be relabeled for any task.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str,
        image_size: int = DEFAULT_ENV.image_size,
        max_steps: int = DEFAULT_ENV.max_steps,
        renderer: str = DEFAULT_ENV.renderer,
        substeps: int = DEFAULT_ENV.substeps,
        render_mode: str | None = None,
        camera: str = DEFAULT_ENV.camera,
    ) -> None:
        self.settings = EnvSettings(
            image_size=image_size, max_steps=max_steps, substeps=substeps, renderer=renderer, camera=camera
        )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: only 'rgb_array' is supported")
        self.task = get_task(task)
        self.task_id = TASK_NAMES.index(task)
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.scene = TabletopScene(substeps=substeps, egl=renderer == "egl")
        self.camera = Camera(self.scene.client, image_size, renderer, camera)
        self._viewer: Camera | None = None  # built on the first render(): rollouts that record nothing never pay
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
            }
        )
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._steps = 0
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        home_xy = np.asarray(HOME_GRASP_POINT_XY) - GRASP_POINT_OFFSET[:2]
        self.scene.reset(self.np_random, np.array([*home_xy, HOVER_WRIST_Z]))
        self._steps = 0
        obs, info = self._observe()
        return obs, info

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action={action!r}: expected an int in [0, {NUM_ACTIONS})")
        action = Action(int(action))
        arm: KukaGripperArm = self.scene.arm
        finger = {Action.CLOSE: 0.0, Action.OPEN: arm.OPEN_ANGLE}.get(action)
        arm.command(WRIST_DELTAS[action], finger)
        self.scene.step_physics()
        self._steps += 1
        obs, info = self._observe()
        terminated = bool(info[INFO_SUCCESS])
        truncated = self._steps >= self.max_steps and not terminated
        return obs, float(info[INFO_TASK_REWARDS][self.task_id]), terminated, truncated, info

    @classmethod
    def from_settings(cls, task: str, settings: EnvSettings, render_mode: str | None = None) -> ManipulationEnv:
        """The env of ``task`` built exactly as ``settings`` say (as recorded in a manifest or checkpoint)."""
        return cls(task, render_mode=render_mode, **settings.env_kwargs())

    def render(self) -> np.ndarray | None:
        """With ``render_mode="rgb_array"``: the scene from the viewer camera, uint8 [256, 256, 3].

        Rendered on demand only (a 256x256 frame costs several policy frames), so stepping is as fast
        as without it; the policy's own frame stays ``obs["image"]``.
        """
        if self.render_mode != "rgb_array":
            return None
        if self._viewer is None:
            self._viewer = Camera(self.scene.client, VIEWER_SIZE, self.settings.renderer, "viewer")
        return self._viewer.render()

    def close(self) -> None:
        self.scene.close()

    def _check_finite(self, state) -> None:
        for name, xyz in zip([spec.name for spec in OBJECTS], state.object_positions):
            if not np.all(np.isfinite(xyz)) or np.abs(xyz).max() > WORLD_RADIUS:
                raise SimulationDiverged(
                    f"{self.task.name}: object {name!r} at {np.round(xyz, 3).tolist()} after step {self._steps}"
                )
        if not np.all(np.isfinite(state.wrist)) or not np.isfinite(state.finger_gap):
            raise SimulationDiverged(f"{self.task.name}: arm state is not finite after step {self._steps}")

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        state = self.scene.state()
        self._check_finite(state)
        successes = np.array([task.success(state) for task in TASKS], dtype=bool)
        self._frame = self.camera.render(state.grasp_point)
        proprio = np.array(
            [*state.grasp_point, state.finger_gap, *state.grasp_target, float(state.closing)], dtype=np.float32
        )
        info = {
            INFO_TASK_REWARDS: successes.astype(np.float32),
            INFO_TASK_SUCCESSES: successes,
            INFO_SUCCESS: bool(successes[self.task_id]),
        }
        return {"image": self._frame, "proprio": proprio}, info
