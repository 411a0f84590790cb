"""A tiny synthetic LightningDataModule with OfflineDataModule's interface, for CLI and resume tests.

Transition b of task t shows one of ``num_states`` flat colours with a white square placed by the state
(so random shifts change the image); task k's reward is 1 (and k is solved) when the action equals
``(state + k) % num_actions``, so the Q-network has something to learn.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


def synthetic_batch(
    generator: torch.Generator, num_tasks: int, batch_size: int, image_size: int, num_actions: int, num_states: int = 4
) -> dict[str, torch.Tensor]:
    t, b, s = num_tasks, batch_size, image_size
    states = torch.randint(0, num_states, (t, b), generator=generator)
    colours = (torch.arange(num_states)[:, None] * 60 + torch.tensor([20, 90, 160])) % 256  # [num_states, 3]
    image = colours[states].to(torch.uint8)[..., None, None].expand(t, b, 3, s, s).clone()
    # A white square in the top-left quarter, lower for higher states: random shifts change the image.
    side = max(1, s // 4)
    pixels = torch.arange(s)
    top = states * ((s - side) // max(1, num_states - 1))  # [T, B]
    in_rows = (pixels >= top[..., None]) & (pixels < top[..., None] + side)  # [T, B, S]
    image.masked_fill_((in_rows[..., :, None] & (pixels < side))[:, :, None], 255)
    action = torch.randint(0, num_actions, (t, b), generator=generator)
    goal = (states[..., None] + torch.arange(t)) % num_actions  # [T, B, T]: rewarded action of every task k
    rewards = (action[..., None] == goal).float()
    return {
        "image": image,
        "next_image": image.flip(0).contiguous(),
        "proprio": torch.rand(t, b, 4, generator=generator),
        "next_proprio": torch.rand(t, b, 4, generator=generator),
        "action": action,
        "rewards": rewards,
        "successes": rewards.clone(),
        # As if each transition were its own episode: it succeeds for task k exactly when rewarded for k.
        "episode_successes": rewards.clone(),
        "steps_to_success": torch.where(rewards > 0, 0.0, torch.inf),
        "bootstrap_steps": torch.ones(t, b),  # one-step transitions
    }


class _Batches(Dataset):
    def __init__(self, length: int, seed: int, **kwargs: int) -> None:
        self.length, self.seed, self.kwargs = length, seed, kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return synthetic_batch(torch.Generator().manual_seed(self.seed * 100_003 + index), **self.kwargs)


class TinyDataModule(LightningDataModule):
    """Synthetic batches [T, B, ...] in the training-batch layout; ``steps_per_epoch`` batches an epoch."""

    def __init__(
        self,
        num_tasks: int = 3,
        batch_size: int = 8,
        image_size: int = 32,
        num_actions: int = 5,
        steps_per_epoch: int = 4,
        val_batches: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._num_tasks, self._image_size, self._num_actions = num_tasks, image_size, num_actions
        self.batch_size, self.steps_per_epoch, self.val_batches, self.seed = (
            batch_size,
            steps_per_epoch,
            val_batches,
            seed,
        )

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    @property
    def task_names(self) -> list[str]:
        return [f"tiny-{i}" for i in range(self._num_tasks)]

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def proprio_dim(self) -> int:
        return 4

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def _loader(self, length: int, seed: int) -> DataLoader:
        data = _Batches(
            length,
            seed,
            num_tasks=self._num_tasks,
            batch_size=self.batch_size,
            image_size=self._image_size,
            num_actions=self._num_actions,
        )
        return DataLoader(data, batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.steps_per_epoch, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_batches, self.seed + 1)
