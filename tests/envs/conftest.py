import pytest

from robocds.envs.env import ManipulationEnv


@pytest.fixture
def make_env():
    """Builds envs and closes them all after the test."""
    envs = []

    def make(task: str = "lift-cube", **kwargs) -> ManipulationEnv:
        env = ManipulationEnv(task, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
