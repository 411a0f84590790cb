"""Rewards against hand-built simulator states, and every task's oracle."""

import numpy as np
import pytest

from robocds.envs.actions import Action
from robocds.envs.env import INFO_TASK_SUCCESSES
from robocds.envs.rollout import play_oracle_episode
from robocds.envs.scene import OBJECTS, ZONES
from robocds.envs.seeds import data_episode_seed
from robocds.envs.tasks import TASK_NAMES, OracleNoise, ScriptedOracle, get_task


def _successes(env) -> dict[str, bool]:
    env.scene.client.performCollisionDetection()
    _, info = env._observe()
    return {name: bool(s) for name, s in zip(TASK_NAMES, info[INFO_TASK_SUCCESSES])}


def _put(env, obj: str, xyz) -> None:
    scene = env.scene
    body = scene.objects[[o.name for o in OBJECTS].index(obj)]
    scene.client.resetBasePositionAndOrientation(body, list(xyz), [0, 0, 0, 1])


def test_no_task_is_solved_at_reset(make_env):
    env = make_env("lift-cube")
    for seed in range(5):
        env.reset(seed=seed)
        assert not any(_successes(env).values())


def test_object_resting_in_a_zone_solves_only_that_place_task(make_env):
    env = make_env("place-cube-blue")
    env.reset(seed=0)
    blue = next(z for z in ZONES if z.name == "blue")
    _put(env, "cube", (*blue.center, OBJECTS[0].half_height))
    solved = {name for name, ok in _successes(env).items() if ok}
    assert solved == {"place-cube-blue"}


def test_object_thrown_above_the_height_is_not_a_lift(make_env):
    env = make_env("lift-cube")
    env.reset(seed=0)
    _put(env, "cube", (0.56, -0.05, 0.2))
    assert not any(_successes(env).values())


def test_object_held_above_the_height_solves_only_its_lift(make_env):
    env = make_env("lift-cylinder")
    oracle = ScriptedOracle(get_task("lift-cylinder"))
    for seed in range(3):  # the oracle grasps and raises it through contact and friction
        episode = play_oracle_episode(env, oracle, seed)
        if episode.success:
            break
    assert episode.success
    solved = {name for name, ok in _successes(env).items() if ok}
    assert solved == {"lift-cylinder"}
    # Opening the fingers drops it: the lift no longer holds.
    for _ in range(3):
        env.step(Action.OPEN)
    assert not any(_successes(env).values())


def test_oracle_noise_is_validated():
    with pytest.raises(ValueError, match="random_action_prob=1.5"):
        OracleNoise(random_action_prob=1.5)
    with pytest.raises(ValueError, match="position_std=-0.1"):
        OracleNoise(position_std=-0.1)


def test_noisy_oracle_is_reproducible_from_its_seed(make_env):
    env = make_env("place-block-purple", image_size=32)
    noise = OracleNoise(random_action_prob=0.3, position_std=0.02)

    def actions():
        oracle = ScriptedOracle(get_task("place-block-purple"), noise, seed=5)
        env.reset(seed=11)
        oracle.reset()
        out = []
        for _ in range(12):
            out.append(oracle.act(env))
            env.step(out[-1])
        return out

    assert actions() == actions()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_oracle_solves_its_task(make_env, task):
    """Fast subset of the documented 50-episode rates: 4 generation seeds per task, >= 3 solved."""
    env = make_env(task, image_size=32)
    oracle = ScriptedOracle(get_task(task))
    wins = [play_oracle_episode(env, oracle, data_episode_seed(0, TASK_NAMES.index(task), e)).success for e in range(4)]
    assert sum(wins) >= 3, f"{task}: oracle solved {sum(wins)}/4"


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_oracle_reaches_80_percent_over_50_episodes(make_env, task):
    env = make_env(task, image_size=32)
    oracle = ScriptedOracle(get_task(task))
    wins = [
        play_oracle_episode(env, oracle, data_episode_seed(0, TASK_NAMES.index(task), e)).success for e in range(50)
    ]
    assert np.mean(wins) >= 0.8, f"{task}: {np.mean(wins):.0%}"
