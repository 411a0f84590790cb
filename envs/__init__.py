"""PyBullet manipulation suite: a KUKA arm, graspable objects, lift and place tasks, scripted oracles."""

from robocds.envs.registration import env_id, register_all

register_all()

__all__ = ["env_id", "register_all"]
