"""Multi-task Q-network: one shared encoder, K independent heads, Q-values for every task and action."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robocds.config import EncoderConfig
from robocds.encoder import ConvEncoder


def head_activation(dropout: float) -> nn.Module:
    """ReLU, then dropout if ``dropout`` > 0, in one slot of a head, so parameter names never depend on it."""
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(relu, nn.Dropout(dropout)) if dropout > 0 else relu


class MultiTaskQNetwork(nn.Module):
    """Frames [N, 3, H, W] and proprio [N, P] -> Q-values [K, N, T, A] from one encoder pass.

    K = ``num_heads`` (twin heads by default), T = tasks, A = actions. Every head is a small MLP on the
    shared features whose output is reshaped to [T, A], so one forward pass scores every task, which is
    what makes relabeling and routing free.
    """

    def __init__(
        self,
        encoder: EncoderConfig,
        image_size: int,
        proprio_dim: int,
        num_tasks: int,
        num_actions: int,
        num_heads: int = 2,
        head_hidden: int = 256,
        head_layernorm: bool = False,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.num_actions = num_actions
        self.encoder = ConvEncoder(encoder, image_size, proprio_dim)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(self.encoder.out_dim, head_hidden),
                *([nn.LayerNorm(head_hidden)] if head_layernorm else []),
                head_activation(head_dropout),
                nn.Linear(head_hidden, num_tasks * num_actions),
            )
            for _ in range(num_heads)
        )

    def forward(self, images: Tensor, proprio: Tensor | None = None) -> Tensor:
        """images [N, 3, H, W] uint8, proprio [N, P] -> Q [K, N, T, A]."""
        features = self.encoder(images, proprio)
        return torch.stack([self._per_task(head(features)) for head in self.heads])

    def values_and_features(self, images: Tensor, proprio: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Q [K, N, T, A] and each head's last hidden layer [K, N, H], the features its Q-values are linear in.

        A separate path from ``forward``, so the usual passes (targets, routing, acting) do not keep the hidden
        layers they never read."""
        features = self.encoder(images, proprio)
        hidden = [head[:-1](features) for head in self.heads]
        q = [self._per_task(head[-1](h)) for head, h in zip(self.heads, hidden)]
        return torch.stack(q), torch.stack(hidden)

    def _per_task(self, outputs: Tensor) -> Tensor:
        """One head's outputs [N, T * A] -> [N, T, A]."""
        return outputs.view(outputs.shape[0], self.num_tasks, self.num_actions)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, parameter by parameter (tau = 1 copies)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
