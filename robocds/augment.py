"""Image augmentation: DrQ random shift (pad by ``pad`` pixels with edge replication, crop back at random), and
photometric jitter (each frame's brightness and contrast scaled at random).

torchvision's ``RandomCrop(padding_mode="edge")`` draws one crop for the whole batch; DrQ needs an
independent shift per image, so the shift is done here: replicate padding, then one row copy that
crops every image at its own offset. It works directly on uint8 frames, on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shift_images(images: Tensor, dy: Tensor, dx: Tensor, max_shift: int | None = None) -> Tensor:
    """Shift each image by an integer offset with edge replication.

    Args:
        images: [N, C, H, W], any dtype.
        dy, dx: int64 [N], offsets in pixels; output pixel (h, w) reads input (h + dy, w + dx), clamped.
        max_shift: a bound on |dy| and |dx| (the padding width); None reads it from the offsets (a device
            sync on GPU).

    Returns:
        [N, C, H, W], same dtype as ``images``, contiguous.
    """
    n, c, h, w = images.shape
    if max_shift is None:
        max_shift = int(torch.cat([dy.abs(), dx.abs()]).max()) if n else 0
    pad = max_shift
    padded = replicate_pad(images, pad)  # [N, C, H + 2 pad, W + 2 pad]
    wp = w + 2 * pad
    # Every output row is W consecutive values of the padded storage: view that storage as the overlapping
    # W-long rows starting at every element and copy the N * C * H wanted ones with one index_select. (A
    # gather with a full-size index reads 8 bytes of index per uint8 pixel: 20x slower on CPU.)
    flat = padded.view(-1)
    segments = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    device = images.device
    planes = torch.arange(n * c, device=device).view(n, c, 1) * (h + 2 * pad)  # first padded row of each plane
    rows = planes + torch.arange(h, device=device).view(1, 1, h) + (dy + pad).view(n, 1, 1)  # [N, C, H]
    starts = rows * wp + (dx + pad).view(n, 1, 1)
    return segments.index_select(0, starts.view(-1)).view(n, c, h, w)


def replicate_pad(images: Tensor, pad: int) -> Tensor:
    """[N, C, H, W] -> contiguous [N, C, H + 2 pad, W + 2 pad] with the edge pixels repeated (any dtype)."""
    if pad == 0:
        return images.contiguous()
    top, bottom = images[:, :, :1].expand(-1, -1, pad, -1), images[:, :, -1:].expand(-1, -1, pad, -1)
    rows = torch.cat([top, images, bottom], dim=2)
    left, right = rows[..., :1].expand(-1, -1, -1, pad), rows[..., -1:].expand(-1, -1, -1, pad)
    return torch.cat([left, rows, right], dim=3).contiguous()


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
    return shift_images(images, offsets[0], offsets[1], max_shift=pad)


def random_intensity(images: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Photometric jitter: scale each image's brightness and contrast by its own factors in [1 - s, 1 + s].

    Unlike the shift it leaves every pixel where it was: it perturbs what the frames look like, not where the
    gripper and the object are in them. Colours keep their ratios (one factor for all three channels).

    Args:
        images: [N, C, H, W], uint8 (0-255) or float in [0, 1].
        strength: s in [0, 1); 0 returns ``images`` unchanged.
        generator: optional random generator (on the images' device).

    Returns:
        [N, C, H, W] float32 in [0, 1] (the encoder's float input), or ``images`` itself when s is 0.
    """
    if strength == 0.0:
        return images
    frames = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    factors = torch.rand((2, frames.shape[0], 1, 1, 1), device=frames.device, generator=generator)
    brightness, contrast = (1.0 - strength) + 2.0 * strength * factors
    mean = frames.mean(dim=(1, 2, 3), keepdim=True)
    return ((frames - mean) * contrast + mean * brightness).clamp_(0.0, 1.0)
