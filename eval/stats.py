"""Success statistics: binomial confidence intervals and per-task summaries."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a success probability (95% by default); (0, 1) for no trials."""
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"successes={successes}, trials={trials}: need 0 <= successes <= trials")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (few seeds need t, not z).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
          2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
          2.045, 2.042)  # fmt: skip


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean of ``values`` (e.g. one success rate per seed) and the 95% t-interval of that mean.

    With a single value the interval has zero width: there is no spread to estimate.
    """
    if not values:
        raise ValueError("mean_interval: no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T_975[n - 2] if n - 1 <= len(_T_975) else Z_95
    half = t * std / math.sqrt(n)
    return mean, mean - half, mean + half
