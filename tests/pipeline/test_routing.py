"""Reading back what a method routed: matrices and thresholds over training, then over seeds."""

import numpy as np
import pytest

from robocds.callbacks import sharing_key
from robocds.pipeline import routing


def test_the_matrix_is_the_mean_over_training_then_over_the_seeds_that_ran(tmp_path, sharing_run):
    tasks = ["a", "b"]
    sharing_run(tmp_path / "s0.csv", tasks, [0.0, 0.2, 0.4])  # mean 0.2
    sharing_run(tmp_path / "s1.csv", tasks, [1.0, 0.6])  # mean 0.8
    csvs = [tmp_path / "s0.csv", tmp_path / "s1.csv", tmp_path / "never-ran.csv"]
    matrix = routing.sharing_matrix(csvs, tasks)
    assert matrix.shape == (2, 2) and matrix == pytest.approx(np.full((2, 2), 0.5))
    assert routing.sharing_matrix(csvs, ["a", "c"]) is None  # a task no run logged
    assert routing.thresholds(csvs, tasks) is None  # a rule without thresholds logs none


def test_thresholds_are_averaged_per_task_and_rendered_per_method(tmp_path, sharing_run):
    tasks = ["a", "b"]
    sharing_run(tmp_path / "s0.csv", tasks, [0.5, 0.5], thresholds=[(0.1, 1.0), (0.3, 2.0)])
    values = routing.thresholds([tmp_path / "s0.csv"], tasks)
    assert values == pytest.approx([0.2, 1.5])
    text = routing.thresholds_markdown({"cds": values}, tasks)
    assert text.splitlines()[-1] == "| cds | 0.200 | 1.500 |"
    table = routing.matrix_markdown(np.array([[1.0, 0.25], [0.0, 1.0]]), tasks)
    assert table.splitlines()[2] == "| **a** | 1.00 | 0.25 |"


def test_a_cell_that_is_not_a_number_is_named_with_its_file_and_column(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(f"step,{sharing_key('a', 'a')}\n0,nan?\n")
    with pytest.raises(ValueError, match=r"metrics.csv: column 'sharing/a/a' holds 'nan\?', not a number"):
        routing.sharing_matrix([path], ["a"])
