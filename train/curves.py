"""Learning curves of training runs: one picture of the curves to check before reading a comparison.

    robocds-curves runs/cds-seed0 runs/cds-seed1/version_0 --out curves.png --labels seed0 seed1

A comparison of sharing methods means something only on a learner that learns (docs/DESIGN.md): a
conservative Q that stays within the achievable returns, whose held-out TD error falls, and that separates
good actions from bad. Every panel is drawn against the optimizer step, from the runs' ``csv/metrics.csv``:

1. success: ``eval/success_average`` (thick) and ``eval/success/<task>`` (thin), when the run evaluated
   during fit (``--config eval_during_fit``);
2. TD error: held-out ``val/td_loss``, and ``train/td_loss`` smoothed; on a second axis the held-out
   ``val/td_relative`` (squared TD error over the targets' variance: 1 for the best constant), which unlike
   the TD loss does not grow with the targets as the values are learned from zero;
3. Q scale: ``val/q_data`` and ``val/target`` (and ``train/q_data`` smoothed) over the band of achievable
   returns ([0, reward scale] by default, the scale read from the runs' ``hparams.yaml``);
4. action separation: ``val/logsumexp - val/q_data``, which is ln(A) when Q is flat over the A actions,
   falls below it as Q ranks the data action above the others (towards 0 when it dominates them) and rises
   above it when Q ranks the data action below them;
5. action agreement: ``val/action_agreement``, how often the greedy action is the data action.

Runs overlay in one colour each; a metric a run did not log is noted in its panel. A RUN_DIR is a run's
version folder (``<runs_dir>/<run_name>/version_N``) or its run folder (the highest N is read). The
console script also prints, per run, the first, last and largest held-out TD error and Q, and the last
success rate.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robocds.errors import ConfigError, int_at_least, output_dir, run_cli
from robocds.files import atomic_path
from robocds.train.layout import CSV_FOLDER, METRICS_FILE, RunLayout, logged_points

SUCCESS_AVERAGE = "eval/success_average"
SUCCESS_PREFIX = "eval/success/"  # + task name
VAL_TD, TRAIN_TD = "val/td_loss", "train/td_loss"
VAL_TD_RELATIVE = "val/td_relative"  # logged since 2026-12-03: earlier runs lack it, and their panel simply omits it
VAL_Q, VAL_TARGET, TRAIN_Q = "val/q_data", "val/target", "train/q_data"
VAL_LOGSUMEXP, VAL_AGREEMENT = "val/logsumexp", "val/action_agreement"
DEFAULT_RETURNS = (0.0, 1.0)  # achievable (discounted) returns of a 0/1 success reward, before reward scaling
HPARAMS_FILE = "hparams.yaml"  # Lightning's, in the version folder: the model's hyperparameters
DEFAULT_ACTIONS = 8  # the suite's action set (robocds.envs.actions)
DEFAULT_SMOOTHING = 0.9  # weight of the training curves' moving average (TensorBoard's slider)
FORMATS = (".png", ".pdf", ".svg")  # what --out may end with (matplotlib picks the format from it)
VERSION_PREFIX = "version_"
MISSING = "-"

Points = tuple[np.ndarray, np.ndarray]  # (steps int64 [N], values float64 [N]), sorted by step


@dataclass(frozen=True)
class RunCurves:
    """What one run logged: ``points[column] = (steps, values)``, as read from ``metrics_csv``."""

    label: str  # the run's name in the legend and the table
    metrics_csv: Path
    points: dict[str, Points]

    def get(self, key: str) -> Points | None:
        return self.points.get(key)

    @property
    def last_step(self) -> int | None:
        return max((int(steps[-1]) for steps, _ in self.points.values() if len(steps)), default=None)

    @property
    def tasks(self) -> list[str]:
        """The tasks of ``eval/success/<task>``, in column order."""
        return [key.removeprefix(SUCCESS_PREFIX) for key in self.points if key.startswith(SUCCESS_PREFIX)]


# ----------------------------------------------------------------------------- reading


def _version(name: str) -> int | None:
    number = name.removeprefix(VERSION_PREFIX)
    return int(number) if number != name and number.isdigit() else None


def metrics_csv_of(run_dir: str | Path) -> Path:
    """The ``metrics.csv`` of ``run_dir``: a version folder, a run folder (its highest version), or any folder
    holding ``csv/metrics.csv``. A user error naming the path when there is none."""
    folder = Path(run_dir)
    if not folder.exists():
        raise ConfigError(f"{run_dir}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{run_dir}: not a folder (give a run's {VERSION_PREFIX}N folder or its run folder)")
    resolved = folder.resolve()
    version = _version(resolved.name)
    if version is not None:
        path = RunLayout(resolved.parent.parent, resolved.parent.name, version).metrics_csv
    elif (resolved / CSV_FOLDER / METRICS_FILE).exists():
        path = resolved / CSV_FOLDER / METRICS_FILE  # a version folder under another name
    else:
        versions = [n for child in resolved.iterdir() if child.is_dir() and (n := _version(child.name)) is not None]
        if not versions:
            raise ConfigError(
                f"{run_dir}: no {CSV_FOLDER}/{METRICS_FILE} and no {VERSION_PREFIX}N folder (not a training run)"
            )
        path = RunLayout(resolved.parent, resolved.name, max(versions)).metrics_csv
    if not path.is_file():
        shown = folder / path.relative_to(resolved)  # as the user wrote the folder
        raise ConfigError(f"{shown}: missing (the run has logged nothing yet, or is not a training run)")
    return path


def default_label(metrics_csv: Path) -> str:
    """The run name of ``<runs_dir>/<run_name>/version_N/csv/metrics.csv`` (else the folder holding ``csv/``)."""
    folder = metrics_csv.parent.parent
    return folder.parent.name if _version(folder.name) is not None else folder.name


def read_run(run_dir: str | Path, label: str | None = None) -> RunCurves:
    """Every metric ``run_dir`` logged, with its steps (sorted by step)."""
    path = metrics_csv_of(run_dir)
    try:
        logged = logged_points(path)
    except ValueError as error:  # a cell that is not a number: the file is damaged, not the code
        raise ConfigError(str(error)) from None
    points = {}
    for key, (steps, values) in logged.items():
        order = np.argsort(np.asarray(steps), kind="stable")
        points[key] = (np.asarray(steps, dtype=np.int64)[order], np.asarray(values, dtype=np.float64)[order])
    return RunCurves(label or default_label(path), path, points)


def read_runs(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[RunCurves]:
    """``read_run`` of each folder; labels default to the run names (the folders as given when two share one)."""
    if labels is not None and len(labels) != len(run_dirs):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(run_dirs)} runs")
    runs = [read_run(folder, None if labels is None else labels[i]) for i, folder in enumerate(run_dirs)]
    if labels is None and len({run.label for run in runs}) < len(runs):
        runs = [RunCurves(str(folder), run.metrics_csv, run.points) for folder, run in zip(run_dirs, runs)]
    return runs


def reward_scale(run: RunCurves) -> float:
    """The run's ``cql.reward_scale`` from its ``hparams.yaml`` (1 where the file or the field is absent: runs
    from before the field existed)."""
    path = run.metrics_csv.parents[1] / HPARAMS_FILE
    if not path.is_file():
        return 1.0
    try:
        hparams = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not readable YAML ({err})") from None
    cql = hparams.get("cql") if isinstance(hparams, dict) else None
    return float(cql.get("reward_scale", 1.0)) if isinstance(cql, dict) else 1.0


def returns_band(runs: Sequence[RunCurves]) -> tuple[float, float]:
    """[0, reward scale]: the achievable returns of the runs' scaled 0/1 reward, which must be one scale."""
    scales = {run.label: reward_scale(run) for run in runs}
    if len(set(scales.values())) > 1:
        listed = ", ".join(f"{label}: {scale:g}" for label, scale in scales.items())
        raise ConfigError(f"the runs' Q are in different units (reward scale {listed}): give --returns LOW HIGH")
    return (DEFAULT_RETURNS[0], DEFAULT_RETURNS[1] * next(iter(scales.values())))


# ----------------------------------------------------------------------------- maths


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing): ``weight`` 0 keeps the values."""
    out = np.empty(len(values), dtype=np.float64)
    running = norm = 0.0
    for i, value in enumerate(values):
        running = weight * running + (1.0 - weight) * value
        norm = weight * norm + (1.0 - weight)
        out[i] = running / norm
    return out


def difference(a: Points | None, b: Points | None) -> Points | None:
    """``a - b`` at the steps both were logged at (the first value of a step when it repeats)."""
    if a is None or b is None:
        return None
    first_b = {}
    for step, value in zip(b[0].tolist(), b[1].tolist()):
        first_b.setdefault(step, value)
    pairs = {}
    for step, value in zip(a[0].tolist(), a[1].tolist()):
        if step in first_b:
            pairs.setdefault(step, value - first_b[step])
    if not pairs:
        return None
    return np.array(list(pairs), dtype=np.int64), np.array(list(pairs.values()), dtype=np.float64)


# ----------------------------------------------------------------------------- the picture


def _note(ax: Axes, runs: Sequence[RunCurves], missing: Sequence[str], name: str, hint: str = "") -> bool:
    """Say in ``ax`` which runs (labels ``missing``) did not log ``name``; False when none of ``runs`` did."""
    if len(missing) == len(runs):
        text = f"not logged: {name}" + (f"\n{hint}" if hint else "")
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
        return False
    if missing:
        text = f"{name} not logged by: {', '.join(missing)}"
        ax.text(0.01, 0.01, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=7, color="0.4")
    return True


def _missing(runs: Sequence[RunCurves], keys: Sequence[str]) -> list[str]:
    """Labels of the runs that logged none of ``keys``."""
    return [run.label for run in runs if all(run.get(key) is None for key in keys)]


def _key(ax: Axes, entries: Sequence[tuple[str, dict]], extra: Sequence[tuple[object, str]] = ()) -> None:
    """A legend of line styles (in grey): which line of a run's colour is which metric."""
    handles = [Line2D([], [], **{"color": "0.35", **style}) for _, style in entries] + [h for h, _ in extra]
    labels = [label for label, _ in entries] + [label for _, label in extra]
    ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.7)


def _success_panel(ax: Axes, runs: Sequence[RunCurves]) -> None:
    ax.set_title("success rate (evaluation during fit)", fontsize=10)
    ax.set_ylim(-0.03, 1.03)
    missing = [run.label for run in runs if run.get(SUCCESS_AVERAGE) is None and not run.tasks]
    hint = "(fit with --config eval_during_fit)"
    if not _note(ax, runs, missing, f"{SUCCESS_AVERAGE}, {SUCCESS_PREFIX}<task>", hint):
        return
    for i, run in enumerate(runs):
        for task in run.tasks:
            steps, values = run.points[f"{SUCCESS_PREFIX}{task}"]
            ax.plot(steps, values, color=f"C{i % 10}", lw=0.7, alpha=0.4)
        if (average := run.get(SUCCESS_AVERAGE)) is not None:
            ax.plot(*average, color=f"C{i % 10}", lw=2.0, marker="o", ms=3)
    _key(ax, [(SUCCESS_AVERAGE, {"lw": 2.0, "marker": "o", "ms": 3}), (f"{SUCCESS_PREFIX}<task>", {"lw": 0.7})])


def _td_panel(ax: Axes, runs: Sequence[RunCurves], smoothing: float) -> None:
    ax.set_title("TD error (held-out data falls on a learner that learns)", fontsize=10)
    if not _note(ax, runs, _missing(runs, [VAL_TD, TRAIN_TD]), f"{VAL_TD}, {TRAIN_TD}"):
        return
    plotted = []
    for i, run in enumerate(runs):
        if (train := run.get(TRAIN_TD)) is not None:
            ax.plot(train[0], smooth(train[1], smoothing), color=f"C{i % 10}", lw=0.8, alpha=0.6)
            plotted.append(train[1])
        if (val := run.get(VAL_TD)) is not None:
            ax.plot(*val, color=f"C{i % 10}", lw=1.8, marker="o", ms=3)
            plotted.append(val[1])
    if all(np.all(values > 0) for values in plotted):
        ax.set_yscale("log")  # TD errors shrink by orders of magnitude
    keys = [(f"{VAL_TD} (held-out)", {"lw": 1.8, "marker": "o", "ms": 3}), (f"{TRAIN_TD} (smoothed)", {"lw": 0.8})]
    relative = [(i, curve) for i, run in enumerate(runs) if (curve := run.get(VAL_TD_RELATIVE)) is not None]
    if relative:
        twin = ax.twinx()
        for i, curve in relative:
            twin.plot(*curve, color=f"C{i % 10}", lw=1.2, ls="--", marker="x", ms=3)
        twin.set_ylim(0.0, max(1.05, max(float(np.max(curve[1])) for _, curve in relative) * 1.05))
        twin.set_ylabel(f"{VAL_TD_RELATIVE} (1: a constant)", fontsize=8)
        keys.append((f"{VAL_TD_RELATIVE} (right axis)", {"lw": 1.2, "ls": "--", "marker": "x", "ms": 3}))
    _key(ax, keys)


def _q_panel(ax: Axes, runs: Sequence[RunCurves], returns: tuple[float, float], smoothing: float) -> None:
    ax.set_title("Q scale (stays within the achievable returns)", fontsize=10)
    ax.axhspan(*returns, color="0.5", alpha=0.15, lw=0)
    band = (Patch(color="0.5", alpha=0.15), f"achievable returns [{returns[0]:g}, {returns[1]:g}]")
    if not _note(ax, runs, _missing(runs, [VAL_Q, VAL_TARGET, TRAIN_Q]), f"{VAL_Q}, {VAL_TARGET}, {TRAIN_Q}"):
        return
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if (train := run.get(TRAIN_Q)) is not None:
            ax.plot(train[0], smooth(train[1], smoothing), color=color, lw=0.8, ls=":", alpha=0.7)
        if (target := run.get(VAL_TARGET)) is not None:
            ax.plot(*target, color=color, lw=1.2, ls="--")
        if (q := run.get(VAL_Q)) is not None:
            ax.plot(*q, color=color, lw=1.8, marker="o", ms=3)
    _key(
        ax,
        [
            (VAL_Q, {"lw": 1.8, "marker": "o", "ms": 3}),
            (VAL_TARGET, {"lw": 1.2, "ls": "--"}),
            (f"{TRAIN_Q} (smoothed)", {"lw": 0.8, "ls": ":"}),
        ],
        [band],
    )


def _separation_panel(ax: Axes, runs: Sequence[RunCurves], num_actions: int) -> None:
    ax.set_title("action separation, held-out (below ln A: the data action ranks above the rest)", fontsize=10)
    flat = math.log(num_actions)
    ax.axhline(flat, color="black", ls="--", lw=1.0)
    gaps = [difference(run.get(VAL_LOGSUMEXP), run.get(VAL_Q)) for run in runs]
    _note(ax, runs, [run.label for run, gap in zip(runs, gaps) if gap is None], f"{VAL_LOGSUMEXP} and {VAL_Q}")
    for i, gap in enumerate(gaps):
        if gap is not None:
            ax.plot(*gap, color=f"C{i % 10}", lw=1.8, marker="o", ms=3)
    _key(
        ax,
        [
            (f"{VAL_LOGSUMEXP} - {VAL_Q}", {"lw": 1.8, "marker": "o", "ms": 3}),
            (f"ln A = ln {num_actions} = {flat:.2f} (flat Q)", {"lw": 1.0, "ls": "--", "color": "black"}),
        ],
    )


def _agreement_panel(ax: Axes, runs: Sequence[RunCurves], num_actions: int) -> None:
    ax.set_title("greedy action = data action, held-out", fontsize=10)
    ax.set_ylim(-0.03, 1.03)
    ax.axhline(1.0 / num_actions, color="black", ls=":", lw=1.0)
    if _note(ax, runs, _missing(runs, [VAL_AGREEMENT]), VAL_AGREEMENT):
        for i, run in enumerate(runs):
            if (agreement := run.get(VAL_AGREEMENT)) is not None:
                ax.plot(*agreement, color=f"C{i % 10}", lw=1.8, marker="o", ms=3)
    _key(
        ax,
        [
            (VAL_AGREEMENT, {"lw": 1.8, "marker": "o", "ms": 3}),
            (f"1/A = {1.0 / num_actions:.3f}", {"lw": 1.0, "ls": ":", "color": "black"}),
        ],
    )


def draw_curves(
    runs: Sequence[RunCurves],
    path: str | Path,
    returns: tuple[float, float] = DEFAULT_RETURNS,
    num_actions: int = DEFAULT_ACTIONS,
    smoothing: float = DEFAULT_SMOOTHING,
) -> Path:
    """Draw the learning curves of ``runs`` into ``path`` (format from its suffix, written atomically).

    ``returns``: the band of achievable returns in the Q panel (low, high); ``num_actions``: A, whose ln is
    the action separation of a flat Q; ``smoothing``: the moving-average weight of the training curves.
    """
    if not runs:
        raise ValueError("draw_curves: no runs")
    if not returns[0] < returns[1]:
        raise ValueError(f"returns={returns}: low must be < high")
    if num_actions < 2:
        raise ValueError(f"num_actions={num_actions}: must be >= 2")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing={smoothing}: must be in [0, 1)")
    fig = Figure(figsize=(13, 12), dpi=100)
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    axes = fig.subplots(3, 2)
    _success_panel(axes[0, 0], runs)
    _td_panel(axes[0, 1], runs, smoothing)
    _q_panel(axes[1, 0], runs, returns, smoothing)
    _separation_panel(axes[1, 1], runs, num_actions)
    _agreement_panel(axes[2, 0], runs, num_actions)
    last = max((run.last_step for run in runs if run.last_step is not None), default=None)
    for ax in axes.flat[:5]:
        ax.set_xlabel("optimizer step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if last:
            ax.set_xlim(0, last * 1.02)
    legend = axes[2, 1]
    legend.axis("off")
    handles = [Line2D([], [], color=f"C{i % 10}", lw=2.5) for i in range(len(runs))]
    legend.legend(
        handles,
        [run.label for run in runs],
        title="runs",
        loc="center",
        fontsize=9,
        ncol=max(1, math.ceil(len(runs) / 14)),
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class RunSummary:
    """The numbers of one run in the console table (None: not logged)."""

    label: str
    last_step: int | None
    td_loss: tuple[float, float, float] | None  # val/td_loss first, last, max
    q_data: tuple[float, float, float] | None  # val/q_data first, last, max
    success: float | None  # the last eval/success_average


def summarize(run: RunCurves) -> RunSummary:
    def first_last_max(key: str) -> tuple[float, float, float] | None:
        points = run.get(key)
        if points is None or not len(points[1]):
            return None
        values = points[1]
        return float(values[0]), float(values[-1]), float(np.max(values))

    success = run.get(SUCCESS_AVERAGE)
    last_success = float(success[1][-1]) if success is not None and len(success[1]) else None
    return RunSummary(run.label, run.last_step, first_last_max(VAL_TD), first_last_max(VAL_Q), last_success)


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def summary_table(runs: Sequence[RunCurves]) -> str:
    """A fixed-width text table (two header lines), one row per run."""
    rows = [["run", "last step", VAL_TD, "", "", VAL_Q, "", "", "success"]]
    rows.append(["", "", "first", "last", "max", "first", "last", "max", "last"])
    for summary in map(summarize, runs):
        cells = [summary.label, MISSING if summary.last_step is None else str(summary.last_step)]
        for triple in (summary.td_loss, summary.q_data):
            cells += [_number(v) for v in triple] if triple else [MISSING] * 3
        rows.append([*cells, _number(summary.success)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# ----------------------------------------------------------------------------- the console script


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a figure to write, checked before any work (a format matplotlib writes, a writable folder)."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {str(out)!r}: is a folder; give a file such as curves.png")
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"{flag} {str(out)!r}: must end with one of {', '.join(FORMATS)}")
    output_dir(out.parent, flag)
    return out


def _smoothing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 1)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robocds-curves", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's version_N folder or its run folder")
    parser.add_argument("--out", required=True, help=f"the figure to write ({', '.join(FORMATS)})")
    parser.add_argument("--labels", nargs="+", help="one legend label per RUN_DIR (default: the run names)")
    parser.add_argument(
        "--returns",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="band of achievable returns in the Q panel (default: 0 and the runs' reward scale)",
    )
    parser.add_argument(
        "--actions", type=int_at_least(2), default=DEFAULT_ACTIONS, help="A, the number of actions (ln A: flat Q)"
    )
    parser.add_argument(
        "--smoothing", type=_smoothing, default=DEFAULT_SMOOTHING, help="moving-average weight of training curves"
    )
    args = parser.parse_args(argv)
    if args.returns is not None and not args.returns[0] < args.returns[1]:
        raise ConfigError(f"--returns {args.returns[0]:g} {args.returns[1]:g}: LOW must be < HIGH")
    out = output_file(args.out)
    runs = read_runs(args.run_dirs, args.labels)
    band = tuple(args.returns) if args.returns is not None else returns_band(runs)
    draw_curves(runs, out, band, args.actions, args.smoothing)
    print(summary_table(runs))
    print(f"outputs: {out}")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-curves``)."""
    run_cli(main, "robocds-curves")


if __name__ == "__main__":
    cli()
