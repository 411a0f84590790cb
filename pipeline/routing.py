"""What each method routed, read back from its runs' ``metrics.csv``: sharing matrices and CDS thresholds.

The ``DataSharing`` callback logs, every ``log_every_n_steps``, the mean sharing matrix since its previous
log and (CDS) the thresholds the last batch was routed with. The mean of a run's logged rows is therefore
the mean over its training; the report averages that over the method's seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robocds.callbacks import SHARING_PREFIX, sharing_key, threshold_key
from robocds.eval.markdown import markdown_table
from robocds.train.layout import logged_series


def logged_means(metrics_csv: Path) -> dict[str, float]:
    """Mean over training of every scalar the sharing callback logged in one run's ``metrics.csv`` (what the
    report reads of a run, and what a results store keeps of it)."""
    return {key: float(np.mean(values)) for key, values in logged_series(metrics_csv, SHARING_PREFIX).items()}


def training_means(metrics_csv: Path, keys: Sequence[str]) -> np.ndarray | None:
    """Mean over training of each of ``keys`` in one run's ``metrics.csv`` (None if any was never logged)."""
    series = logged_series(metrics_csv)
    if not all(series.get(key) for key in keys):
        return None
    return np.array([np.mean(series[key]) for key in keys])


def runs_mean(runs: Sequence[Mapping[str, float]], keys: Sequence[str]) -> np.ndarray | None:
    """Each of ``keys`` averaged over the runs (``logged_means`` of each) that logged every key (None if none did)."""
    means = [np.array([run[key] for key in keys]) for run in runs if all(key in run for key in keys)]
    return np.mean(means, axis=0) if means else None


def seed_mean(metrics_csvs: Sequence[Path], keys: Sequence[str]) -> np.ndarray | None:
    """``training_means`` averaged over the runs that exist and logged every key (None if none did)."""
    means = [m for path in metrics_csvs if path.is_file() and (m := training_means(path, keys)) is not None]
    return np.mean(means, axis=0) if means else None


def sharing_keys(tasks: Sequence[str]) -> list[str]:
    """The keys of a sharing matrix, row (target) by row."""
    return [sharing_key(target, source) for target in tasks for source in tasks]


def sharing_matrix(metrics_csvs: Sequence[Path], tasks: Sequence[str]) -> np.ndarray | None:
    """[target, source] mean weight of the source's transitions routed into the target, over training and seeds."""
    values = seed_mean(metrics_csvs, sharing_keys(tasks))
    return None if values is None else values.reshape(len(tasks), len(tasks))


def sharing_matrix_of(runs: Sequence[Mapping[str, float]], tasks: Sequence[str]) -> np.ndarray | None:
    """``sharing_matrix`` from each run's ``logged_means``."""
    values = runs_mean(runs, sharing_keys(tasks))
    return None if values is None else values.reshape(len(tasks), len(tasks))


def thresholds(metrics_csvs: Sequence[Path], tasks: Sequence[str]) -> np.ndarray | None:
    """[task] CDS threshold over training and seeds (None for methods without thresholds)."""
    return seed_mean(metrics_csvs, [threshold_key(task) for task in tasks])


def thresholds_of(runs: Sequence[Mapping[str, float]], tasks: Sequence[str]) -> np.ndarray | None:
    """``thresholds`` from each run's ``logged_means``."""
    return runs_mean(runs, [threshold_key(task) for task in tasks])


def matrix_markdown(matrix: np.ndarray, tasks: Sequence[str]) -> str:
    """The matrix as a table: one row per target task, one column per source task."""
    rows = [[f"**{target}**", *(f"{v:.2f}" for v in row)] for target, row in zip(tasks, matrix)]
    return markdown_table(["target \\ source", *tasks], rows)


def thresholds_markdown(by_method: dict[str, np.ndarray], tasks: Sequence[str]) -> str:
    """One row per method: its mean threshold per task."""
    return markdown_table(["method", *tasks], [[m, *(f"{v:.3f}" for v in t)] for m, t in by_method.items()])
