"""robocds-curves: learning curves of runs read from their metrics.csv, a PNG and a console table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from robocds.errors import ConfigError, run_cli
from robocds.train import curves
from robocds.train.layout import RunLayout, logged_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = ("lift-cube", "place-cube")


def write_csvlogger(path: Path, rows: list[dict]) -> Path:
    """A metrics.csv as Lightning's CSVLogger writes it: the sorted union of the keys as header, one row per
    log call, empty cells for the metrics not logged by that call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def training_rows(
    val_td: list[float], val_q: list[float], success: list[float] | None, every: int = 100, train: bool = True
) -> list[dict]:
    """What a run logs: train/* every 10 steps (at global_step - 1), val/* and eval/* every ``every`` steps."""
    rows = []
    for k, (td, q) in enumerate(zip(val_td, val_q)):
        end = (k + 1) * every
        if train:
            for step in range(k * every + 9, end, 10):
                rows.append({"epoch": k, "step": step, "train/loss": 1.0, "train/td_loss": 0.1 / (step + 1)})
                rows[-1]["train/q_data"] = 0.5
        val = {"val/td_loss": td, "val/q_data": q, "val/target": q + 0.05, "val/logsumexp": q + math.log(8) - 0.5}
        rows.append({"epoch": k, "step": end - 1, **val, "val/action_agreement": 0.25, "val/cql_loss": 1.6})
        if success is not None:  # SuccessRateCallback: logger.log_metrics(..., step=global_step), no epoch
            per_task = {f"eval/success/{task}": success[k] / (i + 1) for i, task in enumerate(TASKS)}
            rows.append({"step": end, "eval/success_average": success[k], **per_task})
    return rows


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    # cds: an older version_0 and the latest version_1, which a run folder resolves to.
    write_csvlogger(RunLayout(runs, "cds", 0).metrics_csv, training_rows([9.0], [9.0], [0.0]))
    write_csvlogger(
        RunLayout(runs, "cds", 1).metrics_csv, training_rows([0.5, 0.2, 0.3], [0.1, 0.6, 0.4], [0, 0.5, 0.75])
    )
    # none: no evaluation during fit.
    write_csvlogger(RunLayout(runs, "none", 0).metrics_csv, training_rows([0.4, 0.1], [0.2, 0.3], None))
    return runs


def table_rows(out: str) -> dict[str, list[str]]:
    """The console table's runs: label -> the cells after it (the two header lines and outputs: skipped)."""
    lines = [line.split() for line in out.splitlines() if line.strip() and not line.startswith("outputs:")]
    assert lines[0][:3] == ["run", "last", "step"] and lines[1][:3] == ["first", "last", "max"]
    return {cells[0]: cells[1:] for cells in lines[2:]}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)  # decodes the whole file
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 500
    assert not list(path.parent.glob(".*.tmp*"))  # written atomically, nothing left over


def test_the_cli_draws_the_runs_and_prints_their_numbers(runs_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "figures" / "curves.png"
    status = curves.main([str(runs_dir / "cds"), str(runs_dir / "none" / "version_0"), "--out", str(out)])
    assert status == 0
    assert_png(out)
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    # last step, val/td_loss first last max, val/q_data first last max, last eval/success_average
    assert rows["cds"] == ["300", "0.5", "0.3", "0.5", "0.1", "0.4", "0.6", "0.75"]  # version_1, not version_0
    assert rows["none"] == ["199", "0.4", "0.1", "0.4", "0.2", "0.3", "0.3", "-"]
    assert printed.splitlines()[-1] == f"outputs: {out}"


def test_missing_columns_are_noted_not_fatal(runs_dir: Path, tmp_path: Path, capsys) -> None:
    only_train = write_csvlogger(
        tmp_path / "bare" / "version_0" / "csv" / "metrics.csv",
        [{"epoch": 0, "step": 9, "train/loss": 2.0}, {"epoch": 0, "step": 19, "train/loss": 1.0}],
    )
    no_train = RunLayout(runs_dir, "val_only", 0).metrics_csv
    write_csvlogger(no_train, training_rows([0.3], [-0.5], [0.25], train=False))
    out = tmp_path / "curves.png"
    args = [str(only_train.parents[1]), str(no_train.parents[1]), "--out", str(out), "--labels", "bare", "val"]
    assert curves.main([*args, "--returns", "-1", "2", "--actions", "4", "--smoothing", "0"]) == 0
    assert_png(out)
    rows = table_rows(capsys.readouterr().out)
    assert rows["bare"] == ["19", *["-"] * 7]
    assert rows["val"] == ["100", "0.3", "0.3", "0.3", "-0.5", "-0.5", "-0.5", "0.25"]


def test_a_run_folder_without_metrics_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    started = tmp_path / "runs" / "cds"
    (started / "version_0" / "checkpoints").mkdir(parents=True)
    out = tmp_path / "curves.png"
    with pytest.raises(SystemExit) as info:
        run_cli(curves.main, "robocds-curves", [str(started), "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"robocds-curves: error: {started}/version_0/csv/metrics.csv: missing (the run has")
    assert not out.exists()


@pytest.mark.parametrize(
    "case,words",
    [
        ("not a run", "no csv/metrics.csv and no version_N folder"),
        ("no such folder", "nowhere: no such folder"),
        ("labels", "--labels: 2 labels for 1 runs"),
        ("out is a folder", "is a folder; give a file such as curves.png"),
        ("a cell that is not a number", "column 'val/td_loss' holds 'abc', not a number"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys, case: str, words: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    args = [str(run), "--out", str(tmp_path / "curves.png")]
    if case == "no such folder":
        args[0] = str(tmp_path / "nowhere")
    elif case == "labels":
        write_csvlogger(run / "csv" / "metrics.csv", [{"step": 0, "val/td_loss": 1.0}])
        args += ["--labels", "a", "b"]
    elif case == "out is a folder":
        args[2] = str(tmp_path)
    elif case == "a cell that is not a number":
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text("epoch,step,val/td_loss\n0,9,abc\n")
    with pytest.raises(SystemExit) as info:
        run_cli(curves.main, "robocds-curves", args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("robocds-curves: error: ")
    assert words in err, err


def test_points_keep_their_steps_and_the_maths_of_the_panels(tmp_path: Path) -> None:
    path = write_csvlogger(tmp_path / "run" / "csv" / "metrics.csv", training_rows([0.5, 0.2], [0.1, 0.6], [0, 1.0]))
    assert logged_points(path, "val/")["val/td_loss"] == ([99, 199], [0.5, 0.2])
    assert "step" not in logged_points(path) and logged_points(path)["eval/success_average"][0] == [100, 200]
    run = curves.read_run(tmp_path / "run")  # a folder holding csv/metrics.csv, not named version_N
    assert run.label == "run" and run.tasks == list(TASKS) and run.last_step == 200
    steps, gap = curves.difference(run.get(curves.VAL_LOGSUMEXP), run.get(curves.VAL_Q))
    assert steps.tolist() == [99, 199] and gap == pytest.approx([math.log(8) - 0.5] * 2)
    assert curves.difference(run.get(curves.VAL_LOGSUMEXP), None) is None
    assert curves.smooth(np.array([2.0, 2.0, 2.0]), 0.9) == pytest.approx([2.0] * 3)  # debiased: no ramp from 0
    assert curves.smooth(np.array([1.0, 3.0]), 0.0).tolist() == [1.0, 3.0]
    assert curves.smooth(np.array([1.0, 3.0]), 0.5)[1] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / 0.75)


def test_the_returns_band_follows_the_runs_reward_scale(runs_dir: Path, tmp_path: Path) -> None:
    run = curves.read_runs([str(runs_dir / "none" / "version_0")])[0]
    assert curves.returns_band([run]) == (0.0, 1.0)  # no hparams.yaml: a run from before the scale existed
    (run.metrics_csv.parents[1] / "hparams.yaml").write_text("cql:\n  alpha: 3.0\n  reward_scale: 10.0\n")
    assert curves.returns_band([run]) == (0.0, 10.0)
    other = curves.read_runs([str(runs_dir / "cds")])[0]  # no hparams.yaml: scale 1
    with pytest.raises(ConfigError, match=r"reward scale .*: 10, .*: 1\): give --returns LOW HIGH"):
        curves.returns_band([run, other])
    out = tmp_path / "mixed.png"
    args = [str(runs_dir / "none" / "version_0"), str(runs_dir / "cds"), "--out", str(out), "--returns", "0", "10"]
    assert curves.main(args) == 0  # an explicit band draws them together


def test_the_td_panel_draws_the_relative_td_error_on_a_second_axis_when_logged(tmp_path: Path) -> None:
    rows = training_rows([0.5, 0.2], [0.1, 0.6], None)
    for row in rows:
        if "val/td_loss" in row:
            row["val/td_relative"] = row["val/td_loss"] / 2
    write_csvlogger(tmp_path / "new" / "csv" / "metrics.csv", rows)
    write_csvlogger(tmp_path / "old" / "csv" / "metrics.csv", training_rows([0.5, 0.2], [0.1, 0.6], None))
    for name, twins in (("new", 1), ("old", 0)):
        fig = Figure()
        ax = fig.subplots()
        curves._td_panel(ax, [curves.read_run(tmp_path / name)], smoothing=0.6)
        assert len(fig.axes) == 1 + twins
    (x, y) = fig.axes[0].lines[-1].get_data()
    assert list(x) == [99, 199] and list(y) == [0.5, 0.2]  # the old run: val/td_loss, and nothing on a second axis
    fig = Figure()
    curves._td_panel(fig.subplots(), [curves.read_run(tmp_path / "new")], smoothing=0.6)
    assert fig.axes[1].lines[0].get_data()[1].tolist() == [0.25, 0.1]
