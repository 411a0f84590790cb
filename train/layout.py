"""Where a training run writes its files, and reading them back (no Lightning import: readers stay light).

A run launched by ``robocds fit`` with the default loggers lives in ``<runs_dir>/<run_name>/version_N``:

===============================  ===========================================================
path (relative to the run)       what
===============================  ===========================================================
``config.yaml``                  the resolved configuration (LightningCLI's config callback)
``checkpoints/last.ckpt``        the latest weights, saved every epoch and at the end
``checkpoints/best.ckpt``        the weights with the lowest ``val/td_loss``
``csv/metrics.csv``              every logged scalar, one row per logging step (CSVLogger)
``events.out.tfevents.*``        the TensorBoard log
===============================  ===========================================================
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the packaged training configs (``--config NAME``)
CONFIG_FILE = "config.yaml"  # the resolved configuration, in the run's folder
CSV_FOLDER = "csv"  # the CSVLogger's version folder inside the TensorBoard run
METRICS_FILE = "metrics.csv"
STEP_COLUMN = "step"  # the optimizer step of a CSVLogger row
CHECKPOINT_FOLDER = "checkpoints"
LAST_CHECKPOINT = "last"  # file stem of the latest-weights checkpoint
BEST_CHECKPOINT = "best"  # file stem of the best-validation checkpoint


@dataclass(frozen=True)
class RunLayout:
    """The files of one training run, ``<runs_dir>/<run_name>/version_<version>``."""

    runs_dir: Path
    run_name: str
    version: int = 0

    def __post_init__(self) -> None:
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"run_name={self.run_name!r}: must be a non-empty folder name")
        if self.version < 0:
            raise ValueError(f"version={self.version}: must be >= 0")

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunLayout | None:
        """The run whose ``checkpoints/`` folder holds ``checkpoint``, or None if it is not in a run's layout."""
        path = Path(checkpoint).resolve()
        folder = path.parent.parent
        version = folder.name.removeprefix("version_")
        if path.parent.name != CHECKPOINT_FOLDER or version == folder.name or not version.isdigit():
            return None
        return cls(folder.parent.parent, folder.parent.name, int(version))

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir) / self.run_name / f"version_{self.version}"

    @property
    def config(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def last_checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FOLDER / f"{LAST_CHECKPOINT}.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FOLDER / f"{BEST_CHECKPOINT}.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.folder / CSV_FOLDER / METRICS_FILE


def packaged_config(value: str) -> Path | None:
    """The file ``--config VALUE`` of ``robocds fit`` reads: VALUE itself when it is a path, else the packaged
    ``configs/VALUE`` or ``configs/VALUE.yaml`` (None when there is none)."""
    for candidate in (Path(value), CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def logged_series(metrics_csv: Path, prefix: str = "") -> dict[str, list[float]]:
    """Every value logged under every column starting with ``prefix`` in a CSVLogger ``metrics.csv``, in order.

    Rows of a CSVLogger file hold only the metrics logged at that step (the other cells are empty), so a
    metric's series is its filled cells, top to bottom.
    """
    series: dict[str, list[float]] = {}
    for _, key, value in _logged_cells(metrics_csv, prefix):
        series.setdefault(key, []).append(value)
    return series


def logged_points(metrics_csv: Path, prefix: str = "") -> dict[str, tuple[list[int], list[float]]]:
    """``logged_series`` with the optimizer step of every value: ``{column: (steps, values)}``, in file order.

    The step is the row's ``step`` cell, which the CSVLogger writes on every row.
    """
    points: dict[str, tuple[list[int], list[float]]] = {}
    for row, key, value in _logged_cells(metrics_csv, prefix):
        if key == STEP_COLUMN:
            continue
        try:
            step = int(float(row.get(STEP_COLUMN) or ""))
        except ValueError:
            raise ValueError(f"{metrics_csv}: a row holding {key!r} has step {row.get(STEP_COLUMN)!r}") from None
        steps, values = points.setdefault(key, ([], []))
        steps.append(step)
        values.append(value)
    return points


def _logged_cells(metrics_csv: Path, prefix: str) -> Iterator[tuple[dict[str, str], str, float]]:
    """(row, column, value) of every filled cell of a column starting with ``prefix``, top to bottom."""
    with Path(metrics_csv).open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key is not None and key.startswith(prefix) and value not in ("", None):
                    try:
                        number = float(value)
                    except ValueError:
                        raise ValueError(f"{metrics_csv}: column {key!r} holds {value!r}, not a number") from None
                    yield row, key, number
