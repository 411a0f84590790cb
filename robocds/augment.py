"""Image augmentation: DrQ random shift (pad by ``pad`` pixels with edge replication, crop back at random).

torchvision's ``RandomCrop(padding_mode="edge")`` draws one crop for the whole batch; DrQ needs an
independent shift per image, so the shift is done here with two gathers. Clamping the gathered row
and column indices to the image is exactly replicate padding followed by a crop, without
materialising the padded image, and it works directly on uint8 frames.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shift_images(images: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Shift each image by an integer offset with edge replication.

    Args:
        images: [N, C, H, W], any dtype.
        dy, dx: int64 [N], offsets in pixels; output pixel (h, w) reads input (h + dy, w + dx), clamped.

    Returns:
        [N, C, H, W], same dtype as ``images``.
    """
    n, c, h, w = images.shape
    rows = (torch.arange(h, device=images.device)[None, :] + dy[:, None]).clamp_(0, h - 1)  # [N, H]
    cols = (torch.arange(w, device=images.device)[None, :] + dx[:, None]).clamp_(0, w - 1)  # [N, W]
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """DrQ augmentation: shift every image independently by up to ``pad`` pixels in each direction.

    Args:
        images: [N, C, H, W].
        pad: maximum shift in pixels; 0 returns ``images`` unchanged.
        generator: optional random generator (on the images' device).

    Returns:
        [N, C, H, W], same dtype.
    """
    if pad == 0:
        return images
    n = images.shape[0]
    offsets = torch.randint(-pad, pad + 1, (2, n), device=images.device, generator=generator)
    return shift_images(images, offsets[0], offsets[1])
