import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robocds.envs import env_id
from robocds.envs.actions import NUM_ACTIONS, Action
from robocds.envs.env import INFO_SUCCESS, INFO_TASK_REWARDS, INFO_TASK_SUCCESSES, PROPRIO_DIM
from robocds.envs.tasks import TASK_NAMES


@pytest.mark.parametrize("task", TASK_NAMES)
def test_check_env_passes_for_every_task(task):
    env = gym.make(env_id(task), image_size=32, max_steps=8)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_suite_has_two_families_and_at_least_eight_tasks():
    assert len(TASK_NAMES) >= 8
    assert {name.split("-")[0] for name in TASK_NAMES} == {"lift", "place"}


def test_observation_and_info_layout(make_env):
    env = make_env("place-cube-blue", image_size=48)
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (48, 48, 3) and obs["image"].dtype == np.uint8
    assert obs["proprio"].shape == (PROPRIO_DIM,) and obs["proprio"].dtype == np.float32
    obs, reward, terminated, truncated, info = env.step(Action.DOWN)
    assert info[INFO_TASK_REWARDS].shape == (len(TASK_NAMES),)
    assert info[INFO_TASK_SUCCESSES].dtype == bool
    assert reward == info[INFO_TASK_REWARDS][TASK_NAMES.index("place-cube-blue")]
    assert info[INFO_SUCCESS] is False and not terminated and not truncated
    # The image is not blank: objects, zones and the arm are in view.
    assert obs["image"].std() > 10


def test_same_seed_gives_identical_frames_bit_for_bit(make_env):
    rng = np.random.default_rng(0)
    actions = rng.integers(NUM_ACTIONS, size=15)
    fresh = make_env("lift-block")
    used = make_env("lift-block")
    used.reset(seed=99)
    for action in actions[::-1]:  # an unrelated episode first: the next reset must not remember it
        used.step(int(action))

    def frames(env):
        obs, _ = env.reset(seed=7)
        out = [obs["image"], obs["proprio"]]
        for action in actions:
            obs, *_ = env.step(int(action))
            out += [obs["image"], obs["proprio"]]
        return out

    for a, b in zip(frames(fresh), frames(used)):
        np.testing.assert_array_equal(a, b)
    other, _ = fresh.reset(seed=8)
    first, _ = fresh.reset(seed=7)
    assert not np.array_equal(other["image"], first["image"])  # the seed does change the layout


def test_truncates_at_max_steps(make_env):
    env = make_env("lift-cube", max_steps=3)
    env.reset(seed=0)
    flags = [env.step(Action.UP)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_many_envs_live_in_one_process_and_close_releases_the_client(make_env):
    envs = [make_env(task, image_size=32) for task in TASK_NAMES[:4]]
    clients = [env.scene.client._client for env in envs]
    assert len(set(clients)) == len(envs)
    for env in envs:
        env.reset(seed=1)
        env.step(Action.DOWN)
    envs[0].close()
    import pybullet

    assert pybullet.getConnectionInfo(clients[0])["isConnected"] == 0
    assert pybullet.getConnectionInfo(clients[1])["isConnected"] == 1
    envs[0].close()  # closing twice is harmless


def test_bad_input_gets_a_clear_error(make_env):
    with pytest.raises(ValueError, match="unknown task 'lift-banana'"):
        make_env("lift-banana")
    with pytest.raises(ValueError, match="renderer='vulkan'"):
        make_env("lift-cube", renderer="vulkan")
    env = make_env("lift-cube")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action=9"):
        env.step(9)


def test_render_shows_the_viewer_camera_only_when_asked(make_env):
    env = make_env("lift-cube", render_mode="rgb_array", image_size=32)
    obs, _ = env.reset(seed=0)
    env.step(0)
    assert env._viewer is None  # stepping never renders the viewer: rollouts that record nothing pay nothing
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a scene, not a blank image
    assert make_env("lift-cube").render() is None  # no render_mode: nothing rendered


def test_egl_renderer_shows_the_scene(make_env):
    try:
        env = make_env("lift-cube", renderer="egl", image_size=32)
    except RuntimeError as error:  # no EGL device on this machine
        pytest.skip(str(error))
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].std() > 10


def test_a_blown_up_simulation_raises_a_clear_error(make_env):
    from robocds.envs.env import SimulationDiverged

    env = make_env("lift-cube", image_size=32)
    env.reset(seed=0)
    env.scene.client.resetBasePositionAndOrientation(env.scene.objects[1], [1e3, 0, 0], [0, 0, 0, 1])
    with pytest.raises(SimulationDiverged, match="object 'cylinder' at \\[1000.0"):
        env.step(Action.UP)


def test_a_client_interrupted_while_connecting_is_finalized_without_a_traceback(capfd):
    """Ctrl-C can land in BulletClient.__init__ (before ``_client`` is set) or in its ``__del__``: pybullet's
    own finalizer then raises, which Python prints as an "Exception ignored" traceback after the one line."""
    from robocds.envs.bullet import QuietBulletClient

    half_built = QuietBulletClient.__new__(QuietBulletClient)  # as a KeyboardInterrupt in __init__ leaves it
    half_built.__del__()  # BulletClient's own raises AttributeError here
    client = QuietBulletClient()
    client.__del__()
    client.__del__()  # twice: already disconnected
    out, err = capfd.readouterr()
    assert "argv[0]" not in out and err == ""
