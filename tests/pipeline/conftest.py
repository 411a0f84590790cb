"""Fakes of what training runs write, for the pipeline's readers."""

import pytest

from robocds.callbacks import SHARED_FRACTION_KEY, sharing_key, threshold_key


def write_metrics(path, header, rows):
    """A CSVLogger-like file: rows hold only the metrics logged at their step (the other cells empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_sharing_run(path, tasks, logged_values, thresholds=None):
    """One run that logged, at each of its logging steps, every matrix cell as the given value."""
    keys = [sharing_key(i, j) for i in tasks for j in tasks] + [SHARED_FRACTION_KEY]
    keys += [threshold_key(t) for t in tasks] if thresholds else []
    rows = []
    for step, value in enumerate(logged_values):
        cells = [value] * (len(tasks) ** 2 + 1) + (list(thresholds[step]) if thresholds else [])
        rows += [[step, 1.0, *([None] * len(keys))], [step, None, *cells]]  # a train/loss row between logs
    write_metrics(path, ["step", "train/loss", *keys], rows)


@pytest.fixture
def sharing_run():
    """``write_sharing_run``: a run's ``metrics.csv`` as the sharing callback logs it."""
    return write_sharing_run
