"""Where a training update's time goes on CPU, and what the convolutions cost in other forms.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_convolutions.py [--threads 1] [--rounds 12]

1. Profile (``torch.profiler``) of the CDS update at the CPU benchmark's shapes (T = 5, B = 32, 48x48;
   ``bench_training.make_update``): the share of the convolution kernels (forward and backward).
2. Each conv layer of the default stack, forward + backward on 160 frames, in five forms computing the
   same function: oneDNN (the default), oneDNN off, ``channels_last``, im2col (``unfold`` + matrix
   product), and space-to-depth (a k x k, stride s convolution as ``pixel_unshuffle(s)`` + a (k/s) x (k/s)
   stride-1 convolution; checked against the default to 1e-5). Medians of interleaved rounds.
3. The whole update with the default encoder and narrower ones (interleaved rounds): a smaller network
   is a different model, listed for what it would buy.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_training import SCALES, make_update, synthetic_batch

from robocds.config import EncoderConfig

LAYERS = ((3, 32, 8, 4, 48), (32, 64, 4, 2, 11), (64, 64, 3, 1, 4))  # in, out, kernel, stride, input side


def interleaved(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each variant over ``rounds`` shuffled rounds (two untimed calls first)."""
    for fn in variants.values():
        fn(), fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def space_to_depth_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a kernel divisible by the stride, as pixel_unshuffle + a stride-1 convolution."""
    k, s = conv.kernel_size[0], conv.stride[0]
    side = s * ((x.shape[-1] - k) // s) + k  # the input rows and columns the convolution reads
    o, c = conv.weight.shape[:2]
    weight = conv.weight.view(o, c, k // s, s, k // s, s).permute(0, 1, 3, 5, 2, 4)
    weight = weight.reshape(o, c * s * s, k // s, k // s)
    return F.conv2d(F.pixel_unshuffle(x[..., :side, :side], s), weight, conv.bias)


def im2col_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    k, s = conv.kernel_size[0], conv.stride[0]
    out = (x.shape[-1] - k) // s + 1
    columns = F.unfold(x, k, stride=s)  # [N, C k k, L]
    y = conv.weight.view(conv.out_channels, -1) @ columns + conv.bias[:, None]
    return y.view(x.shape[0], conv.out_channels, out, out)


def layer_forms(conv: torch.nn.Conv2d, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """Forward + backward of ``conv`` on ``x`` in every form (see the module docstring)."""
    x_last = x.detach().to(memory_format=torch.channels_last).requires_grad_(x.requires_grad)
    conv_last = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride)
    conv_last = conv_last.to(memory_format=torch.channels_last)
    forms: dict[str, Callable[[], torch.Tensor]] = {
        "oneDNN": lambda: conv(x),
        "channels_last": lambda: conv_last(x_last),
        "im2col": lambda: im2col_conv(x, conv),
    }
    k, s = conv.kernel_size[0], conv.stride[0]
    if k % s == 0 and s > 1:
        forms["space-to-depth"] = lambda: space_to_depth_conv(x, conv)
        torch.testing.assert_close(forms["space-to-depth"](), conv(x), atol=1e-5, rtol=1e-5)

    def without_onednn() -> None:
        with torch.backends.mkldnn.flags(enabled=False):
            conv(x).sum().backward()

    variants = {name: (lambda form=form: form().sum().backward()) for name, form in forms.items()}
    return variants | {"oneDNN off": without_onednn}


def conv_forms(frames: int, rounds: int) -> None:
    for cin, cout, k, s, side in LAYERS:
        conv = torch.nn.Conv2d(cin, cout, k, s)
        x = torch.rand(frames, cin, side, side, requires_grad=cin != 3)
        ms = interleaved(layer_forms(conv, x), rounds)
        cells = ", ".join(f"{name} {value:.1f} ms ({value / ms['oneDNN']:.2f}x)" for name, value in ms.items())
        print(f"conv {cin}->{cout} k{k} s{s} on {side}x{side}, forward + backward: {cells}")


def profile_update(rounds: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    shapes = SCALES["cpu"]
    batch, update = synthetic_batch(shapes, "cpu"), make_update(shapes, "cds", "cpu")
    for _ in range(3):
        update(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            update(batch)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    kernels = ("aten::mkldnn_convolution", "aten::convolution_backward")
    conv = sum(e.self_cpu_time_total for e in events if e.key in kernels)
    print(f"update profile ({rounds} updates): convolution kernels {100 * conv / total:.0f}% of self CPU time")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]:
        print(f"  {e.key:<36} {100 * e.self_cpu_time_total / total:5.1f}%")


def encoder_widths(rounds: int) -> None:
    shapes = SCALES["cpu"]
    batch = synthetic_batch(shapes, "cpu")
    encoders = {
        "default (32, 64, 64), 256": EncoderConfig(),
        "(16, 32, 32), 256": EncoderConfig(channels=(16, 32, 32)),
        "(16, 32, 32), 128": EncoderConfig(channels=(16, 32, 32), feature_dim=128),
    }
    updates = {name: make_update(shapes, "cds", "cpu", encoder) for name, encoder in encoders.items()}
    ms = interleaved({name: (lambda u=u: u(batch)) for name, u in updates.items()}, rounds)
    base = ms["default (32, 64, 64), 256"]
    for name, value in ms.items():
        print(f"update, encoder {name}: {value:.1f} ms ({base / value:.2f}x the default's speed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    profile_update(max(args.rounds // 2, 3))
    conv_forms(SCALES["cpu"].tasks * SCALES["cpu"].batch_size, args.rounds)
    encoder_widths(args.rounds)


if __name__ == "__main__":
    main()
