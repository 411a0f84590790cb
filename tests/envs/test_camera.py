import numpy as np
import pytest

from robocds.envs.actions import Action
from robocds.envs.camera import Camera
from robocds.envs.suite import CAMERAS, CameraPose


def red_centroid(frame: np.ndarray) -> np.ndarray:
    """Column and row of the red cube's pixels (lift-cube's object) in an RGB frame."""
    mask = (frame[..., 0] > 150) & (frame[..., 1] < 90) & (frame[..., 2] < 90)
    rows, cols = np.nonzero(mask)
    assert mask.sum() >= 20, "the cube is not in the frame"
    return np.array([cols.mean(), rows.mean()])


def test_the_wrist_camera_moves_with_the_gripper(make_env):
    # A 4 cm move to the left shifts a resting object sideways in the frame by several pixels and not up or
    # down; a 4 cm move forward shifts it down the frame: the camera rides on the gripper.
    env = make_env("lift-cube", image_size=48, camera="wrist")
    obs, _ = env.reset(seed=0)
    start = red_centroid(obs["image"])
    obs, *_ = env.step(Action.Y_PLUS)
    left = red_centroid(obs["image"])
    assert left[0] - start[0] >= 3 and abs(left[1] - start[1]) < 1.5
    obs, *_ = env.step(Action.X_PLUS)
    forward = red_centroid(obs["image"])
    assert forward[1] - left[1] >= 2


def test_a_fixed_camera_ignores_the_gripper_and_a_mounted_one_needs_it(make_env):
    env = make_env("lift-cube", image_size=32)
    env.reset(seed=0)
    front = Camera(env.scene.client, 32, camera="front")
    assert not front.mounted and np.array_equal(front.render(), front.render(np.array([9.0, 9.0, 9.0])))
    wrist = Camera(env.scene.client, 32, camera="wrist")
    assert wrist.mounted and CAMERAS["wrist"].mount == "gripper"
    with pytest.raises(ValueError, match="pass grasp_point"):
        wrist.render()
    grasp_point = env.scene.state().grasp_point
    assert not np.array_equal(wrist.render(grasp_point), wrist.render(grasp_point + [0.0, 0.04, 0.0]))


def test_a_camera_pose_names_what_it_is_mounted_on():
    with pytest.raises(ValueError, match="mount='grip'"):
        CameraPose(target=(0.0, 0.0, 0.0), distance=0.2, yaw=0.0, pitch=-45.0, fov=60.0, mount="grip")
