"""Compare evaluation folders: mean success and 95% interval over seeds, per task and on average.

    robocds-report runs/*/seed*/eval --out reports/comparison

Runs are grouped by the ``label`` in their ``summary.json`` (one label per method, one folder per
seed). Writes ``report.md``, ``report.json`` and a grouped bar chart ``success.png``, then the
field's aggregate statistics (``robocds.eval.aggregate_report``: IQM, mean and probability of
improvement with stratified-bootstrap intervals, over all tasks and per task group of ``--recipe``)
with their figures under ``aggregate/``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from robocds.errors import ConfigError, int_at_least, output_dir, run_cli  # noqa: E402
from robocds.eval.aggregate import DEFAULT_REPS  # noqa: E402
from robocds.eval.aggregate_report import aggregate_markdown, aggregate_section  # noqa: E402
from robocds.eval.evaluate import SUMMARY_FILE  # noqa: E402
from robocds.eval.markdown import markdown_table  # noqa: E402
from robocds.eval.stats import mean_interval, wilson_interval  # noqa: E402
from robocds.files import atomic_path, write_text_atomic  # noqa: E402

AVERAGE = "average"
# No "Software" (matplotlib's version) in the PNGs: the same report reads the same, byte for byte, wherever the
# rendering is the same.
PNG_METADATA = {"Software": None}


def load_summaries(folders: list[str | Path]) -> list[dict]:
    """Read ``summary.json`` of every folder, with a clear error naming a missing or broken one."""
    summaries = []
    for folder in folders:
        path = Path(folder) / SUMMARY_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: no evaluation summary (is {str(folder)!r} an evaluation folder?)")
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(summary, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(summary).__name__}")
        for key in ("label", "per_task", "average_success"):
            if key not in summary:
                raise ConfigError(f"{path}: missing key {key!r}")
        summary["_folder"] = str(folder)
        summaries.append(summary)
    return summaries


def compare(summaries: list[dict]) -> dict:
    """``{label: {task or "average": {"mean", "low", "high", "runs", "interval"}}}`` over each label's runs.

    The interval is the 95% t-interval of the mean over runs (seeds); a label with a single run has no
    spread over seeds, so its interval is the binomial (Wilson) one over that run's episodes.
    """
    by_label: dict[str, list[dict]] = defaultdict(list)
    for summary in summaries:
        by_label[summary["label"]].append(summary)
    tasks = sorted({t for s in summaries for t in s["per_task"]}, key=lambda t: _task_order(summaries, t))
    table = {}
    for label, runs in by_label.items():
        rows = {}
        for task in tasks:
            results = [r["per_task"][task] for r in runs if task in r["per_task"]]
            if results:
                rows[task] = _row([res["success_rate"] for res in results], [_counts([res]) for res in results])
        counts = [_counts(list(r["per_task"].values())) for r in runs]  # the average pools a run's episodes
        rows[AVERAGE] = _row([r["average_success"] for r in runs], counts)
        table[label] = rows
    return {"tasks": tasks, "methods": table, "folders": {s["_folder"]: s["label"] for s in summaries}}


def _counts(task_results: list[dict]) -> tuple[int, int] | None:
    """(successes, episodes) summed over per-task results, or None for summaries that lack the counts."""
    if not all("episodes" in res and "successes" in res for res in task_results):
        return None
    return sum(res["successes"] for res in task_results), sum(res["episodes"] for res in task_results)


def _row(rates: list[float], counts: list[tuple[int, int] | None]) -> dict:
    """Mean of ``rates`` (one per run) with its 95% interval: t over runs, or Wilson over a single run's episodes."""
    mean, low, high = mean_interval(rates)
    if len(rates) == 1 and counts[0] is not None and counts[0][1] > 0:
        low, high = wilson_interval(*counts[0])
        return {"mean": mean, "low": low, "high": high, "runs": 1, "interval": "wilson"}
    return {"mean": mean, "low": low, "high": high, "runs": len(rates), "interval": "t"}


def _task_order(summaries: list[dict], task: str) -> int:
    for summary in summaries:
        if task in summary.get("tasks", []):
            return summary["tasks"].index(task)
    return 10**6


def markdown(comparison: dict) -> str:
    methods = list(comparison["methods"])
    rows = []
    for task in [*comparison["tasks"], AVERAGE]:
        cells = [comparison["methods"][method].get(task) for method in methods]
        name = f"**{task}**" if task == AVERAGE else task
        rows.append([name, *("-" if cell is None else _cell(cell) for cell in cells)])
    runs = ", ".join(f"{m}: {comparison['methods'][m][AVERAGE]['runs']} runs" for m in methods)
    text = (
        markdown_table(["task", *methods], rows)
        + f"\n\nMean success over runs (seeds) with a 95% t-interval; {runs}.\n"
    )
    if "aggregate" in comparison:
        text += "\n" + aggregate_markdown(comparison["aggregate"])
    return text


def _cell(cell: dict) -> str:
    if cell["runs"] == 1:
        return f"{cell['mean']:.1%}"
    return f"{cell['mean']:.1%} [{max(cell['low'], 0):.1%}, {min(cell['high'], 1):.1%}]"


def bar_chart(comparison: dict, path: str | Path) -> Path:
    """Grouped bars: one group per task (and the average), one bar per method, 95% interval whiskers."""
    groups = [*comparison["tasks"], AVERAGE]
    methods = list(comparison["methods"])
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups)), 4.5))
    for i, method in enumerate(methods):
        rows = comparison["methods"][method]
        means = np.array([rows[g]["mean"] if g in rows else np.nan for g in groups])
        low = np.array([rows[g]["low"] if g in rows else np.nan for g in groups])
        high = np.array([rows[g]["high"] if g in rows else np.nan for g in groups])
        errors = np.clip(np.vstack([means - low, high - means]), 0, None)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=errors, capsize=2, label=method)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    # Say which interval the whiskers are: a single run has no spread over seeds, only over episodes.
    kinds = {cell.get("interval", "t") for rows in comparison["methods"].values() for cell in rows.values()}
    whiskers = {"t": "95% t-interval over runs", "wilson": "95% Wilson interval over episodes (one run)"}
    ax.set_title("whiskers: " + "; ".join(whiskers[k] for k in sorted(kinds, reverse=True)), fontsize="small")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, metadata=PNG_METADATA)
    plt.close(fig)
    return Path(path)


def report(
    folders: list[str | Path],
    out_dir: str | Path,
    groups: dict[str, tuple[str, ...]] | None = None,
    methods: list[str] | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """Compare the evaluation ``folders``; the aggregate section covers ``methods`` (default: every label),
    over all tasks and each of ``groups``, with ``reps`` bootstrap replicates drawn from ``seed``."""
    return report_summaries(load_summaries(folders), out_dir, groups, methods, reps, seed)


def report_summaries(
    summaries: list[dict],
    out_dir: str | Path,
    groups: dict[str, tuple[str, ...]] | None = None,
    methods: list[str] | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """``report`` of evaluation summaries already read (each with its ``_folder``, as ``load_summaries`` gives:
    the name ``report.json`` lists it under). The same summaries give the same files, byte for byte."""
    comparison = compare(summaries)
    out = Path(out_dir)
    comparison["aggregate"] = aggregate_section(summaries, out, groups, methods, reps=reps, seed=seed)
    write_text_atomic(out / "report.json", json.dumps(comparison, indent=2))
    write_text_atomic(out / "report.md", "# Success rates\n\n" + markdown(comparison))
    bar_chart(comparison, out / "success.png")
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robocds-report", description="Compare evaluation folders in one table and one bar chart."
    )
    parser.add_argument("folders", nargs="+", help="evaluation output folders (each with summary.json)")
    parser.add_argument("--out", required=True, help="output folder for report.md, report.json, success.png")
    parser.add_argument("--methods", nargs="+", help="labels of the aggregate section, in order (default: all)")
    parser.add_argument("--recipe", help="aggregate per task group of this recipe too (a packaged name or a file)")
    parser.add_argument(
        "--bootstrap-reps", type=int_at_least(1), default=DEFAULT_REPS, help="bootstrap replicates of every interval"
    )
    parser.add_argument("--bootstrap-seed", type=int_at_least(0), default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    groups = None
    if args.recipe:
        from robocds.datasets.recipe import load_recipe

        groups = load_recipe(args.recipe).groups
    output_dir(args.out)
    comparison = report(args.folders, args.out, groups, args.methods, args.bootstrap_reps, args.bootstrap_seed)
    print(markdown(comparison))
    print(f"outputs: {args.out}/report.md, {args.out}/report.json, {args.out}/success.png, {args.out}/aggregate/")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-report``)."""
    run_cli(main, "robocds-report")


if __name__ == "__main__":
    cli()
