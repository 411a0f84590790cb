"""CNN encoder for RGB frames, optionally fused with the proprioceptive vector."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robocds.config import EncoderConfig


def conv_output_size(size: int, kernel_sizes: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Side of the square feature map after valid (unpadded) convolutions of a ``size`` x ``size`` image."""
    for k, s in zip(kernel_sizes, strides):
        size = (size - k) // s + 1
    return size


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 [..., 0-255] -> float32 centred on 0 ([-0.5, 0.5]); float input is taken to be in [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.float().mul_(1.0 / 255.0).sub_(0.5)
    return images.float() - 0.5


class SpatialSoftmax(nn.Module):
    """[N, C, H, W] feature map -> [N, 2C]: per channel, the softmax-weighted mean (x, y) in [-1, 1].

    Each channel becomes a keypoint (Levine et al. 2016); the temperature is learned.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: Tensor) -> Tensor:
        n, c = features.shape[:2]
        attention = torch.softmax(features.reshape(n, c, -1) / self.log_temperature.exp(), dim=-1)  # [N, C, HW]
        return (attention @ self.grid).reshape(n, 2 * c)


class ConvEncoder(nn.Module):
    """Frames [N, 3, H, W] (uint8 or float in [0, 1]) and proprio [N, P] -> features [N, out_dim].

    conv stack (ReLU) -> flatten or spatial softmax (``pooling``) -> Linear -> LayerNorm -> tanh (the
    DrQ/SAC-AE projection, which keeps the embedding bounded), concatenated with ReLU(Linear(proprio))
    when ``use_proprio``.
    """

    def __init__(self, config: EncoderConfig, image_size: int, proprio_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        side = conv_output_size(image_size, config.kernel_sizes, config.strides)
        if side < 1:
            raise ValueError(
                f"image_size={image_size} is too small for the conv stack kernel_sizes={config.kernel_sizes}, "
                f"strides={config.strides} (feature map side would be {side})"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for out, k, s in zip(config.channels, config.kernel_sizes, config.strides):
            layers += [nn.Conv2d(channels, out, k, s), nn.ReLU(inplace=True)]
            channels = out
        if config.pooling == "spatial_softmax":
            # The softmax needs raw activations: a ReLU would flatten every negative cell to the same weight.
            layers.pop()
            pool: nn.Module = SpatialSoftmax(side, side)
            pooled = 2 * channels
        else:
            pool, pooled = nn.Flatten(), channels * side * side
        self.convs = nn.Sequential(*layers)
        self.project = nn.Sequential(
            pool,
            nn.Linear(pooled, config.feature_dim),
            nn.LayerNorm(config.feature_dim),
            nn.Tanh(),
        )
        self.use_proprio = config.use_proprio
        self.proprio_dim = proprio_dim
        self.proprio = (
            nn.Sequential(nn.Linear(proprio_dim, config.proprio_features), nn.ReLU()) if self.use_proprio else None
        )
        self.out_dim = config.feature_dim + (config.proprio_features if self.use_proprio else 0)

    def forward(self, images: Tensor, proprio: Tensor | None = None) -> Tensor:
        """images [N, 3, H, W], proprio [N, P] (required iff ``use_proprio``) -> [N, out_dim]."""
        features = self.project(self.convs(to_unit_float(images)))
        if self.proprio is None:
            return features
        if proprio is None:
            raise ValueError("this encoder fuses proprio (use_proprio=True) but proprio is None")
        return torch.cat([features, self.proprio(proprio.float())], dim=-1)
