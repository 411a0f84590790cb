"""RGB cameras (poses in ``robocds.envs.suite.CAMERAS``): fixed over the table, or mounted on the gripper;
rendered by TinyRenderer (CPU) or the EGL plugin (GPU)."""

from __future__ import annotations

import numpy as np

from robocds.envs.bullet import BulletClient
from robocds.envs.suite import CAMERAS, DEFAULT_ENV, MIN_IMAGE_SIZE, RENDERERS


class Camera:
    """Renders uint8 RGB frames of shape [size, size, 3] from one viewpoint (``CAMERAS[camera]``)."""

    def __init__(
        self,
        client: BulletClient,
        size: int = DEFAULT_ENV.image_size,
        renderer: str = DEFAULT_ENV.renderer,
        camera: str = DEFAULT_ENV.camera,
    ) -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"renderer={renderer!r}: expected one of {RENDERERS}")
        if size < MIN_IMAGE_SIZE:
            raise ValueError(f"image size={size}: must be at least {MIN_IMAGE_SIZE} pixels")
        if camera not in CAMERAS:
            raise ValueError(f"camera={camera!r}: expected one of {tuple(CAMERAS)}")
        self.pose = pose = CAMERAS[camera]
        self.client = client
        self.size = size
        self.view = None if self.mounted else self._view(np.zeros(3))  # a mounted camera's view moves
        self.projection = client.computeProjectionMatrixFOV(fov=pose.fov, aspect=1.0, nearVal=0.05, farVal=2.0)
        # With "egl" the scene must have loaded the plugin (load_egl) before creating its bodies.
        self._renderer = client.ER_BULLET_HARDWARE_OPENGL if renderer == "egl" else client.ER_TINY_RENDERER

    @property
    def mounted(self) -> bool:
        """Whether the camera moves with the gripper (``render`` then needs the grasp point)."""
        return self.pose.mount == "gripper"

    def _view(self, origin: np.ndarray) -> list[float]:
        return self.client.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=[float(v) for v in origin + np.asarray(self.pose.target)],
            distance=self.pose.distance,
            yaw=self.pose.yaw,
            pitch=self.pose.pitch,
            roll=0.0,
            upAxisIndex=2,
        )

    def render(self, grasp_point: np.ndarray | None = None) -> np.ndarray:
        """One frame, uint8 [size, size, 3]; a gripper-mounted camera needs the grasp point's world xyz [3]."""
        if self.mounted and grasp_point is None:
            raise ValueError("a gripper-mounted camera renders from the grasp point: pass grasp_point")
        view = self._view(np.asarray(grasp_point, dtype=float)) if self.mounted else self.view
        _, _, rgba, _, _ = self.client.getCameraImage(
            self.size,
            self.size,
            view,
            self.projection,
            shadow=0,
            renderer=self._renderer,
            flags=self.client.ER_NO_SEGMENTATION_MASK,
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[:, :, :3].copy()


def load_egl(client: BulletClient) -> int:
    """Load pybullet's EGL renderer into ``client``; call before any body is created, or the
    bodies made earlier are invisible to it."""
    import importlib.util

    spec = importlib.util.find_spec("eglRenderer")
    if spec is None or spec.origin is None:
        raise RuntimeError("renderer='egl': pybullet's eglRenderer plugin is not installed with this pybullet")
    plugin = client.loadPlugin(spec.origin, "_eglRendererPlugin")
    if plugin < 0:
        raise RuntimeError("renderer='egl': pybullet could not load the eglRenderer plugin (no EGL device?)")
    return plugin
