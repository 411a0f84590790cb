"""Synthetic training batches in the layout of ``robocds.datasets.schema`` for the learner's tests.

Transition b of task t shows one of ``num_states`` flat colours (+ a little noise); task k's reward
is 1 (and task k solved) when the action equals ``(state + k) % num_actions``.
"""

from __future__ import annotations

import torch


def make_batch(
    num_tasks: int = 3,
    batch_size: int = 8,
    image_size: int = 16,
    num_actions: int = 4,
    proprio_dim: int = 4,
    num_states: int = 4,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t, b, s = num_tasks, batch_size, image_size
    states = torch.randint(0, num_states, (t, b), generator=g)
    colours = (torch.arange(num_states)[:, None] * 60 + torch.tensor([20, 90, 160])) % 200  # [num_states, 3]
    noise = torch.randint(0, 8, (t, b, 3, s, s), generator=g)
    image = (colours[states][..., None, None] + noise).to(torch.uint8)
    action = torch.randint(0, num_actions, (t, b), generator=g)
    goal = (states[..., None] + torch.arange(t)) % num_actions  # [T, B, T]
    rewards = (action[..., None] == goal).float()
    return {
        "image": image,
        "next_image": image.roll(1, dims=1).contiguous(),
        "proprio": torch.rand(t, b, proprio_dim, generator=g),
        "next_proprio": torch.rand(t, b, proprio_dim, generator=g),
        "action": action,
        "rewards": rewards,
        "successes": rewards.clone(),
        # As if each transition were its own episode: it succeeds for task k exactly when rewarded for k.
        "episode_successes": rewards.clone(),
        "steps_to_success": torch.where(rewards > 0, 0.0, torch.inf),
        "bootstrap_steps": torch.ones(t, b),  # one-step transitions
    }


TINY_ENCODER = {
    "channels": (8, 16),
    "kernel_sizes": (3, 3),
    "strides": (2, 2),
    "feature_dim": 32,
    "proprio_features": 8,
}
