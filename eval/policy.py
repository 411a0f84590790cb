"""Policies that evaluation can roll out: a trained checkpoint, the scripted oracle, uniform random."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import DEFAULT_ENV, EnvSettings
from robocds.errors import CheckpointError, ConfigError


class Policy(Protocol):
    """Chooses actions for a batch of observations, each for its own task."""

    name: str
    task_names: Sequence[str]  # the tasks it can act for
    runs_in_worker: bool  # True: the env worker computes the action itself (scripted oracle)

    def act(self, images: np.ndarray, proprio: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        """uint8 [N, H, W, 3] frames, float32 [N, P] proprio, N task names -> int64 [N] actions."""
        ...


class ModulePolicy:
    """Greedy policy of a ``MultiTaskCQL`` module (trained or training), batched on its device."""

    runs_in_worker = False

    def __init__(self, module, name: str = "model") -> None:
        self.module = module
        self.name = name
        self.task_names = list(module.task_names)
        self._index = {task: i for i, task in enumerate(self.task_names)}

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def env(self) -> EnvSettings:
        return module_env(self.module, self.name)

    def act(self, images: np.ndarray, proprio: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        state = torch.from_numpy(np.ascontiguousarray(proprio)).to(self.device, non_blocking=True)
        was_training = self.module.training
        self.module.eval()
        try:
            actions = self.module.act(image, state)  # [N, T]
        finally:
            self.module.train(was_training)
        columns = torch.tensor([self._index[t] for t in tasks], device=actions.device)
        return actions.gather(1, columns[:, None])[:, 0].cpu().numpy()


def module_env(module, source: str = "the model") -> EnvSettings:
    """The env settings a ``MultiTaskCQL`` was trained for (its ``env`` hyperparameter, from the data's manifest).

    A checkpoint from before the settings travelled with the model has only ``image_size``: the other
    settings are then this code's defaults, with a warning.
    """
    env = module.hparams.get("env")
    if env is None:
        warnings.warn(
            f"{source}: no env settings in the checkpoint (written by an older version); using image_size="
            f"{module.hparams['image_size']} and the default horizon, physics and camera",
            stacklevel=2,
        )
        return dataclasses.replace(DEFAULT_ENV, image_size=int(module.hparams["image_size"]))
    try:
        return EnvSettings.from_json_dict(dict(env))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: hyperparameter env: {err}") from None


def load_checkpoint_policy(checkpoint: str | Path, device: str | torch.device | None = None) -> ModulePolicy:
    """Rebuild the model from a checkpoint's own saved hyperparameters and wrap it as a policy.

    Raises ``CheckpointError`` (a user error naming the file) for anything that is not a MultiTaskCQL
    checkpoint; the file is loaded with ``weights_only=True``.
    """
    from robocds.checkpoint import load_module  # torch-heavy: imported only when a checkpoint is used

    path = Path(checkpoint)
    module = load_module(path, map_location=policy_device(device))
    return ModulePolicy(module.eval(), name=path.stem)


def policy_device(device: str | torch.device | None) -> torch.device:
    """``device`` checked (default: cuda if available, else cpu); a ``ConfigError`` names a bad one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: expected cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return resolved


class OraclePolicy:
    """The scripted oracle of each task (noise 0); it reads the true state inside the env worker."""

    runs_in_worker = True
    name = "oracle"

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)

    def act(self, images: np.ndarray, proprio: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        raise RuntimeError("the oracle acts inside the env workers")


class RandomPolicy:
    """Uniformly random actions: the floor any learned policy should clear."""

    runs_in_worker = False
    name = "random"

    def __init__(self, task_names: Sequence[str], seed: int = 0) -> None:
        self.task_names = list(task_names)
        self.rng = np.random.default_rng(seed)

    def act(self, images: np.ndarray, proprio: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        return self.rng.integers(NUM_ACTIONS, size=len(tasks))
