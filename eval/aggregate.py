"""Aggregate success over runs and tasks the way the field reports it (rliable; Agarwal et al., NeurIPS 2021).

Scores are success rates arranged per method as a matrix [runs, tasks] (one row per training seed).
Every estimate comes with a 95% stratified-bootstrap interval: runs are resampled within each task,
so a task with a large spread does not borrow certainty from the others.

- ``interval_estimates``: IQM (the mean of the middle 50% of all run x task scores) and mean;
- ``improvement_probabilities``: P(X > Y), the probability that a run of X beats a run of Y on a
  task, averaged over tasks (Mann-Whitney U), for pairs of methods;
- ``performance_profiles``: the fraction of run x task scores above each threshold tau;
- ``interval_plot`` / ``probability_plot`` / ``profile_plot``: the three standard figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rliable import library as rly  # noqa: E402
from rliable import metrics  # noqa: E402

from robocds.files import atomic_path  # noqa: E402

METRICS = ("IQM", "mean")
DEFAULT_REPS = 5000  # bootstrap replications: stable to ~0.5 points at 5 seeds, seconds to compute
PROFILE_TAUS = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% stratified-bootstrap interval."""

    point: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


def check_scores(scores: Mapping[str, np.ndarray]) -> int:
    """Validate {method: [runs, tasks]} success rates in [0, 1]; returns the number of tasks."""
    if not scores:
        raise ValueError("no methods to aggregate")
    num_tasks = None
    for method, matrix in scores.items():
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
            raise ValueError(f"scores[{method!r}] has shape {matrix.shape}: expected [runs >= 1, tasks >= 1]")
        if not np.all(np.isfinite(matrix)) or matrix.min() < 0 or matrix.max() > 1:
            raise ValueError(f"scores[{method!r}]: success rates must be finite and in [0, 1]")
        if num_tasks is not None and matrix.shape[1] != num_tasks:
            raise ValueError(f"scores[{method!r}] has {matrix.shape[1]} tasks, another method has {num_tasks}")
        num_tasks = matrix.shape[1]
    return int(num_tasks)


def _iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


def _bootstrap(score_dict: Mapping, func, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's interval estimates, reproducible by ``seed``.

    rliable's stratified bootstrap draws its run indices from numpy's *global* generator (its
    ``random_state`` reaches only arch's own draws), so the global state is seeded here and restored after.
    """
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch 7 takes a RandomState with a FutureWarning; results are the same
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return rly.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)


def interval_estimates(
    scores: Mapping[str, np.ndarray], reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[str, dict[str, Estimate]]:
    """``{method: {"IQM": Estimate, "mean": Estimate}}`` over all runs and tasks of ``scores``."""
    check_scores(scores)
    points, intervals = _bootstrap({m: np.asarray(s, float) for m, s in scores.items()}, _iqm_and_mean, reps, seed)
    return {
        method: {
            name: Estimate(float(points[method][k]), float(intervals[method][0, k]), float(intervals[method][1, k]))
            for k, name in enumerate(METRICS)
        }
        for method in scores
    }


def improvement_probabilities(
    scores: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[tuple[str, str], Estimate]:
    """P(X > Y) with its interval for every (X, Y) in ``pairs`` (both methods must be in ``scores``)."""
    check_scores(scores)
    for pair in pairs:
        missing = [m for m in pair if m not in scores]
        if missing:
            raise ValueError(f"pair {pair}: no scores for {missing} (methods: {sorted(scores)})")
    if not pairs:
        return {}
    data = {pair: (np.asarray(scores[pair[0]], float), np.asarray(scores[pair[1]], float)) for pair in pairs}
    points, intervals = _bootstrap(data, metrics.probability_of_improvement, reps, seed)
    return {pair: Estimate(*(float(np.ravel(v)[0]) for v in (points[pair], *intervals[pair]))) for pair in pairs}


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: np.ndarray = PROFILE_TAUS, reps: int = 2000, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of run x task scores > tau for every tau: ({method: [len(taus)]}, {method: [2, len(taus)]})."""
    check_scores(scores)

    def profile(matrix: np.ndarray) -> np.ndarray:
        return (matrix[..., None] > taus).mean(axis=(0, 1))

    return _bootstrap({m: np.asarray(s, float) for m, s in scores.items()}, profile, reps, seed)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def interval_plot(estimates: Mapping[str, Mapping[str, Estimate]], path: str | Path, title: str = "") -> Path:
    """One panel per metric (IQM, mean), one row per method: the point and its 95% interval."""
    methods = list(estimates)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.6 * len(METRICS), 0.5 * len(methods) + 1.2), squeeze=False)
    for ax, name in zip(axes[0], METRICS):
        for row, method in enumerate(methods):
            e = estimates[method][name]
            ax.barh(row, e.high - e.low, left=e.low, height=0.6, color=f"C{row}", alpha=0.6)
            ax.plot([e.point, e.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
        ax.set_yticks(range(len(methods)), methods if ax is axes[0, 0] else [""] * len(methods))
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{name} success")
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def probability_plot(probabilities: Mapping[tuple[str, str], Estimate], path: str | Path, title: str = "") -> Path:
    """P(X > Y) with its interval, one row per pair; 0.5 (no difference) marked."""
    pairs = list(probabilities)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(pairs) + 1.2))
    for row, pair in enumerate(pairs):
        e = probabilities[pair]
        ax.barh(row, e.high - e.low, left=e.low, height=0.6, color=f"C{row % 10}", alpha=0.6)
        ax.plot([e.point, e.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
    ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(pairs)), [f"{x} > {y}" for x, y in pairs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(X > Y)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def profile_plot(
    profiles: Mapping[str, np.ndarray],
    intervals: Mapping[str, np.ndarray],
    path: str | Path,
    taus: np.ndarray = PROFILE_TAUS,
    title: str = "",
) -> Path:
    """Performance profiles: fraction of runs x tasks with success > tau, with 95% bands."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, method in enumerate(profiles):
        ax.plot(taus, profiles[method], color=f"C{k}", label=method)
        ax.fill_between(taus, intervals[method][0], intervals[method][1], color=f"C{k}", alpha=0.2)
    ax.set_xlabel("success threshold tau")
    ax.set_ylabel("fraction of runs x tasks with success > tau")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)
