"""Aggregate success over runs and tasks the way the field reports it (rliable; Agarwal et al., NeurIPS 2021).

Scores are success rates arranged per method as a matrix [runs, tasks] (one row per training seed).
Every estimate comes with a 95% stratified-bootstrap interval: runs are resampled within each task,
so a task with a large spread does not borrow certainty from the others.

- ``interval_estimates``: IQM (the mean of the middle 50% of all run x task scores) and mean;
- ``improvement_probabilities``: P(X > Y), the probability that a run of X beats a run of Y on a
  task, averaged over tasks (Mann-Whitney U), for pairs of methods;
- ``performance_profiles``: the fraction of run x task scores above each threshold tau;
- ``interval_plot`` / ``probability_plot`` / ``profile_plot``: the three standard figures, one panel per
  task group.

Point estimates are rliable's own metrics. The intervals follow rliable's stratified bootstrap
(``StratifiedBootstrap`` / ``StratifiedIndependentBootstrap``: every (run, task) cell of a replicate
draws one of that task's runs, independently per method, and the interval is the 2.5th-97.5th
percentile of the replicates) computed on all replicates at once: rliable's bootstrap calls scipy's
Mann-Whitney U once per task and replicate, which took 196 s for the probabilities of improvement of
12 method pairs at 2,000 replicates (7 methods x 5 seeds x 5 tasks) where this takes well under a
second. The tests check every replicate against rliable's metric on the same resample. A method with
a single run has no spread to resample: its intervals are NaN (``Estimate.has_interval``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rliable import metrics  # noqa: E402
from scipy import stats  # noqa: E402

from robocds.files import atomic_path  # noqa: E402

METRICS = ("IQM", "mean")
DEFAULT_REPS = 5000  # bootstrap replications: stable to ~0.5 points at 5 seeds, milliseconds to compute
MIN_RUNS = 2  # runs per method a bootstrap interval needs (one run has no spread over seeds)
PROFILE_TAUS = np.linspace(0.0, 1.0, 21)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% stratified-bootstrap interval (NaN bounds: too few runs for one)."""

    point: float
    low: float
    high: float

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def as_dict(self) -> dict[str, float | None]:
        """JSON form; a missing interval's bounds are null."""
        return {"point": self.point, **({"low": self.low, "high": self.high} if self.has_interval else {})}


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


def stratified_resample(matrix: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """[runs, tasks] -> [reps, runs, tasks]: each cell holds one of its task's runs, drawn with replacement."""
    runs, tasks = matrix.shape
    return matrix[rng.integers(0, runs, size=(reps, runs, tasks)), np.arange(tasks)]


def iqm_and_mean(samples: np.ndarray) -> np.ndarray:
    """[..., runs, tasks] -> [..., 2]: rliable's IQM (25% trimmed mean of all scores) and mean, batched."""
    flat = samples.reshape(*samples.shape[:-2], -1)
    return np.stack([stats.trim_mean(flat, 0.25, axis=-1), flat.mean(axis=-1)], axis=-1)


def improvement_probability(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[..., n, tasks], [..., m, tasks] -> [...]: P(X > Y) per task (ties count 1/2: Mann-Whitney U / nm),
    averaged over tasks; rliable's ``probability_of_improvement``, batched."""
    x, y = x[..., :, None, :], y[..., None, :, :]
    per_task = (x > y).mean(axis=(-3, -2)) + 0.5 * (x == y).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def profile(samples: np.ndarray, taus: np.ndarray = PROFILE_TAUS) -> np.ndarray:
    """[..., runs, tasks] -> [..., len(taus)]: fraction of run x task scores > tau (rliable's score distribution)."""
    return (samples[..., None] > taus).mean(axis=(-3, -2))


def _rng(seed: int, *methods: str) -> np.random.Generator:
    """The bootstrap stream of ``methods`` under ``seed``: a method's interval does not depend on which
    other methods are aggregated with it, nor in what order."""
    return np.random.default_rng([seed, *(zlib.crc32(method.encode()) for method in methods)])


def _interval(replicates: np.ndarray) -> np.ndarray:
    """[reps, ...] -> [2, ...]: the percentile interval of the bootstrap replicates."""
    tail = 100 * (1 - CONFIDENCE) / 2
    return np.percentile(replicates, [tail, 100 - tail], axis=0)


def _bootstrap(
    matrices: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], reps: int, rng: np.random.Generator
) -> np.ndarray:
    """[2, ...] interval of ``statistic`` over stratified resamples of every matrix (independently); NaN when a
    matrix has fewer than ``MIN_RUNS`` runs."""
    if reps < 1:
        raise ValueError(f"reps={reps}: must be >= 1")
    samples = [stratified_resample(np.asarray(m, float), reps, rng) for m in matrices]
    interval = _interval(statistic(*samples))
    if min(np.shape(m)[0] for m in matrices) < MIN_RUNS:
        interval = np.full_like(interval, np.nan)
    return interval


def interval_estimates(
    scores: Mapping[str, np.ndarray], reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[str, dict[str, Estimate]]:
    """``{method: {"IQM": Estimate, "mean": Estimate}}`` over all runs and tasks of ``scores``."""
    check_scores(scores)
    out = {}
    for method, matrix in scores.items():
        matrix = np.asarray(matrix, float)
        points = (metrics.aggregate_iqm(matrix), metrics.aggregate_mean(matrix))
        low, high = _bootstrap([matrix], iqm_and_mean, reps, _rng(seed, method))
        out[method] = {
            name: Estimate(float(p), float(lo), float(hi)) for name, p, lo, hi in zip(METRICS, points, low, high)
        }
    return out


def improvement_probabilities(
    scores: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[tuple[str, str], Estimate]:
    """P(X > Y) with its interval for every (X, Y) in ``pairs`` (both methods must be in ``scores``)."""
    check_scores(scores)
    for pair in pairs:
        missing = [m for m in pair if m not in scores]
        if missing:
            raise ValueError(f"pair {pair}: no scores for {missing} (methods: {sorted(scores)})")
    out = {}
    for x, y in pairs:
        data = (np.asarray(scores[x], float), np.asarray(scores[y], float))
        low, high = _bootstrap(data, improvement_probability, reps, _rng(seed, x, y))
        out[(x, y)] = Estimate(float(metrics.probability_of_improvement(*data)), float(low), float(high))
    return out


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: np.ndarray = PROFILE_TAUS, reps: int = 2000, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of run x task scores > tau for every tau: ({method: [len(taus)]}, {method: [2, len(taus)]})."""
    check_scores(scores)
    points, intervals = {}, {}
    for method, matrix in scores.items():
        matrix = np.asarray(matrix, float)
        points[method] = profile(matrix, taus)
        intervals[method] = _bootstrap([matrix], lambda samples: profile(samples, taus), reps, _rng(seed, method))
    return points, intervals


def _save(fig: plt.Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata={"Software": None})  # bytes independent of the version
    plt.close(fig)
    return Path(path)


def _grid(rows: int, cols: int, width: float, height: float) -> tuple[plt.Figure, np.ndarray]:
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def interval_plot(panels: Mapping[str, Mapping[str, Mapping[str, Estimate]]], path: str | Path) -> Path:
    """One row per panel (e.g. a task group: ``{title: {method: {metric: Estimate}}}``), one column per
    metric (IQM, mean), one bar per method: the point and its 95% interval (if any)."""
    height = 0.45 * max(len(estimates) for estimates in panels.values()) + 1.0
    fig, axes = _grid(len(panels), len(METRICS), 3.6, height)
    for axes_row, (title, estimates) in zip(axes, panels.items()):
        methods = list(estimates)
        for ax, name in zip(axes_row, METRICS):
            for row, method in enumerate(methods):
                e = estimates[method][name]
                if e.has_interval:
                    ax.barh(row, e.high - e.low, left=e.low, height=0.6, color=f"C{row}", alpha=0.6)
                ax.plot([e.point, e.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
            ax.set_yticks(range(len(methods)), methods if ax is axes_row[0] else [""] * len(methods))
            ax.set_xlim(0, 1)
            ax.set_title(f"{title}: {name}", fontsize="medium")
            ax.grid(axis="x", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("success rate")
    return _save(fig, path)


def probability_plot(panels: Mapping[str, Mapping[tuple[str, str], Estimate]], path: str | Path) -> Path:
    """One panel per group (``{title: {(X, Y): Estimate}}``): P(X > Y) with its interval, one row per pair;
    0.5 (no difference) marked."""
    height = 0.4 * max(len(probabilities) for probabilities in panels.values()) + 1.0
    fig, axes = _grid(len(panels), 1, 6.5, height)
    for ax, (title, probabilities) in zip(axes[:, 0], panels.items()):
        pairs = list(probabilities)
        for row, pair in enumerate(pairs):
            e = probabilities[pair]
            if e.has_interval:
                ax.barh(row, e.high - e.low, left=e.low, height=0.6, color=f"C{row % 10}", alpha=0.6)
            ax.plot([e.point, e.point], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
        ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(pairs)), [f"{x} > {y}" for x, y in pairs])
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("P(X > Y)")
    return _save(fig, path)


def profile_plot(
    panels: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    path: str | Path,
    taus: np.ndarray = PROFILE_TAUS,
) -> Path:
    """Performance profiles, one panel per group (``{title: (profiles, intervals)}`` as
    ``performance_profiles`` returns them): fraction of runs x tasks with success > tau, with 95% bands."""
    fig, axes = _grid(1, len(panels), 4.2, 3.6)
    for ax, (title, (profiles, intervals)) in zip(axes[0], panels.items()):
        for k, method in enumerate(profiles):
            ax.plot(taus, profiles[method], color=f"C{k}", label=method)
            ax.fill_between(taus, intervals[method][0], intervals[method][1], color=f"C{k}", alpha=0.2)
        ax.set_xlabel("success threshold tau")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize="medium")
    axes[0, 0].set_ylabel("fraction of runs x tasks > tau")
    axes[0, -1].legend(fontsize="small")
    return _save(fig, path)
