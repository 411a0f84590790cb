"""A fixed RGB camera over the table, rendered by TinyRenderer (CPU) or the EGL plugin (GPU)."""

from __future__ import annotations

import numpy as np
from pybullet_utils.bullet_client import BulletClient

RENDERERS = ("tiny", "egl")
MIN_IMAGE_SIZE = 16  # smallest frame the camera renders (recipes and evaluation settings check against it)


class Camera:
    """Renders uint8 RGB frames of shape [size, size, 3] from one fixed viewpoint.

    The view looks at the table centre from in front of the arm and above, so the gripper, all
    objects and both target zones are in frame.
    """

    def __init__(self, client: BulletClient, size: int = 64, renderer: str = "tiny") -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"renderer={renderer!r}: expected one of {RENDERERS}")
        if size < MIN_IMAGE_SIZE:
            raise ValueError(f"image size={size}: must be at least {MIN_IMAGE_SIZE} pixels")
        self.client = client
        self.size = size
        self.view = client.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=[0.55, 0.0, 0.04], distance=0.6, yaw=90.0, pitch=-60.0, roll=0.0, upAxisIndex=2
        )
        self.projection = client.computeProjectionMatrixFOV(fov=55.0, aspect=1.0, nearVal=0.05, farVal=2.0)
        # With "egl" the scene must have loaded the plugin (load_egl) before creating its bodies.
        self._renderer = client.ER_BULLET_HARDWARE_OPENGL if renderer == "egl" else client.ER_TINY_RENDERER

    def render(self) -> np.ndarray:
        """One frame, uint8 [size, size, 3]."""
        _, _, rgba, _, _ = self.client.getCameraImage(
            self.size,
            self.size,
            self.view,
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
