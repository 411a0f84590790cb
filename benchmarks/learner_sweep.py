"""Tune the learner one setting at a time: train, evaluate in the arm and read the held-out curves, per seed.

    python benchmarks/learner_sweep.py run --data <dataset> --store <folder> --setting alpha0.1 \
        --seeds 0 1 2 --configs no_sharing scale_cpu scale_evidence -- --model.cql.alpha 0.1
    python benchmarks/learner_sweep.py table --store <folder> --data <dataset> [--reference baseline --group data_rich]
        [--seeds 0 1 2]

``run`` trains ``robocds fit --config base --config <configs...> <overrides>`` for every seed, evaluates the last
checkpoint with ``robocds-eval`` on evaluation seeds, and keeps one small JSON record per (setting, seed) in
``<store>/records/`` (written atomically): the command, per-task success, and the held-out diagnostics the
issue's targets read (``val/td_loss`` first / min / last, ``val/q_data`` and ``val/target`` max, the gap
``val/logsumexp - val/q_data`` last, ``val/action_agreement`` last, training time). A record that exists is
skipped, so an interrupted sweep resumes; runs and evaluations go to ``<store>/work/`` (not meant to be kept).
``table`` prints one row per setting: mean success over its seeds per task group of the recipe and overall,
next to the data's own success, and the diagnostics; with ``--reference``, rliable's interval estimates (IQM, mean)
of one task group and the probability of improvement over the reference. Public tools only (the project's own
console scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from robocds.datasets.manifest import manifest_recipe, read_manifest
from robocds.eval.markdown import markdown_table
from robocds.files import write_text_atomic
from robocds.train.layout import RunLayout, logged_series


def record_path(store: Path, setting: str, seed: int) -> Path:
    return store / "records" / f"{setting}-seed{seed}.json"


def diagnostics(metrics_csv: Path) -> dict[str, float | None]:
    """Held-out curve summaries of one run (None where a metric was not logged)."""
    series = logged_series(metrics_csv, "val/")

    def pick(name: str, how) -> float | None:
        values = series.get(name)
        return round(float(how(values)), 4) if values else None

    def curve(name: str) -> list[float]:
        return [round(float(v), 4) for v in series.get(name, [])]

    gap = None
    if series.get("val/logsumexp") and series.get("val/q_data"):
        gap = round(series["val/logsumexp"][-1] - series["val/q_data"][-1], 4)
    return {
        "val_td_first": pick("val/td_loss", lambda v: v[0]),
        "val_td_min": pick("val/td_loss", min),
        "val_td_last": pick("val/td_loss", lambda v: v[-1]),
        "val_td_max": pick("val/td_loss", max),
        "val_q_data_max": pick("val/q_data", max),
        "val_q_data_min": pick("val/q_data", min),
        "val_q_data_last": pick("val/q_data", lambda v: v[-1]),
        "val_target_max": pick("val/target", max),
        "val_gap_last": gap,
        "val_agreement_last": pick("val/action_agreement", lambda v: v[-1]),
        # Whole curves (one value per validation), so a later question about their shape needs no re-run.
        "val_td_series": curve("val/td_loss"),
        "val_td_relative_series": curve("val/td_relative"),
        "val_q_data_series": curve("val/q_data"),
        "val_target_series": curve("val/target"),
        "val_coadaptation_series": curve("val/coadaptation"),  # empty unless the DR3 term is on
    }


def run_one(args: argparse.Namespace, seed: int, threads: int) -> dict:
    """Train, evaluate and summarise one seed of the setting; returns its record (also written to the store)."""
    store, name = Path(args.store), f"{args.setting}-seed{seed}"
    path = record_path(store, args.setting, seed)
    if path.is_file():
        return json.loads(path.read_text())
    work = store / "work"
    runs, eval_dir = work / "runs", work / "eval" / name
    shutil.rmtree(runs / name, ignore_errors=True)  # an interrupted run starts again
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    configs = [arg for config in ("base", *args.configs) for arg in ("--config", config)]
    fit = [sys.executable, "-m", "robocds.train", "fit", *configs, "--data.root", args.data,
           "--seed_everything", str(seed), "--runs_dir", str(runs), "--run_name", name,
           "--trainer.enable_progress_bar", "false", *args.overrides]  # fmt: skip
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run(fit, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)
        train_s = time.perf_counter() - start
        layout = RunLayout(runs, name)
        evaluate = [sys.executable, "-m", "robocds.eval", "--checkpoint", str(layout.last_checkpoint),
                    "--out", str(eval_dir), "--episodes", str(args.episodes), "--seed", "0", "--videos", "0",
                    "--workers", "0", "--threads", str(threads)]  # fmt: skip
        shutil.rmtree(eval_dir, ignore_errors=True)
        subprocess.run(evaluate, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)
    summary = json.loads((eval_dir / "summary.json").read_text())
    record = {
        "setting": args.setting,
        "seed": seed,
        "configs": list(args.configs),
        "overrides": list(args.overrides),
        "episodes_per_task": args.episodes,
        "success": {task: r["success_rate"] for task, r in summary["per_task"].items()},
        "train_minutes": round(train_s / 60, 2),
        "threads": threads,
        # What the run resolved (its config.yaml), so a record says what trained whatever the defaults of the day.
        "resolved": resolved_learner(layout.config),
        **diagnostics(layout.metrics_csv),
    }
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return record


def resolved_learner(config_yaml: Path) -> dict:
    """The learner settings a run resolved: its objective, ``model.cql``, optimiser, schedule and ``data.n_step``."""
    config = yaml.safe_load(config_yaml.read_text())
    model, data = config["model"], config["data"].get("init_args", config["data"])
    return {
        "objective": model.get("objective", "cql"),
        "cql": model["cql"],
        "n_step": data.get("n_step", 1),
        "optimizer": model.get("optimizer"),
        "lr_scheduler": model.get("lr_scheduler"),
    }


def run(args: argparse.Namespace) -> None:
    threads = args.threads or (1 if args.jobs > 1 else (os.cpu_count() or 1))
    with ThreadPoolExecutor(args.jobs) as pool:
        for record in pool.map(lambda seed: run_one(args, seed, threads), args.seeds):
            print(json.dumps({k: record[k] for k in ("setting", "seed", "success", "val_td_last", "val_q_data_max")}))


def table(args: argparse.Namespace) -> None:
    manifest = read_manifest(args.data)
    groups = dict(manifest_recipe(manifest, args.data).groups or {})  # the recipe recorded with the data
    records: dict[str, list[dict]] = {}
    for path in sorted((Path(args.store) / "records").glob("*.json")):
        record = json.loads(path.read_text())
        if args.seeds is None or record["seed"] in args.seeds:
            records.setdefault(record["setting"], []).append(record)
    tasks = list(manifest.task_names)
    groups["all"] = tasks
    own = {task.name: task.success_rate for task in manifest.tasks}
    header = ["setting", "seeds", *groups, "val td first -> last", "val Q max", "gap last", "agree", "train min"]
    rows = [["data's own", "", *(f"{np.mean([own[t] for t in g]):.1%}" for g in groups.values()), "", "", "", "", ""]]
    order = args.order or sorted(records)
    for setting in order:
        runs = records.get(setting, [])
        if not runs:
            continue

        def mean(key: str, runs: list[dict] = runs) -> float:
            values = [r[key] for r in runs if r.get(key) is not None]
            return float(np.mean(values)) if values else float("nan")

        cells = [f"{np.mean([[r['success'][t] for t in g] for r in runs]):.1%}" for g in groups.values()]
        rows.append([
            setting, ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"])), *cells,
            f"{mean('val_td_first'):.2f} -> {mean('val_td_last'):.2f}", f"{mean('val_q_data_max'):.2f}",
            f"{mean('val_gap_last'):.2f}", f"{mean('val_agreement_last'):.2f}", f"{mean('train_minutes'):.1f}",
        ])  # fmt: skip
    print(markdown_table(header, rows))
    if args.reference:
        print()
        print(intervals(records, order, groups[args.group], args.reference, args.group))
    if args.per_task:
        per_task = [[s, *(f"{np.mean([r['success'][t] for r in records[s]]):.0%}" for t in tasks)] for s in order
                    if s in records]  # fmt: skip
        print()
        print(markdown_table(["setting", *tasks], [["data's own", *(f"{own[t]:.0%}" for t in tasks)], *per_task]))


def intervals(records: dict[str, list[dict]], order: list[str], tasks: list[str], reference: str, group: str) -> str:
    """rliable's estimates on ``group``'s tasks (runs x tasks, stratified bootstrap, 95%): IQM and mean of every
    setting, and P(setting > reference), the probability that a run of it beats a run of the reference on a task."""
    from robocds.eval.aggregate import improvement_probabilities, interval_estimates

    scores = {s: np.array([[r["success"][t] for t in tasks] for r in records[s]]) for s in order if s in records}
    if reference not in scores:
        raise SystemExit(f"--reference {reference}: no records of it (settings: {sorted(scores)})")
    estimates = interval_estimates(scores)
    pairs = [(s, reference) for s in scores if s != reference]
    better = improvement_probabilities(scores, pairs)

    def cell(e) -> str:
        return f"{e.point:.1%} [{e.low:.1%}, {e.high:.1%}]"

    rows = [
        [s, str(len(scores[s])), cell(estimates[s]["IQM"]), cell(estimates[s]["mean"]),
         "" if s == reference else f"{better[(s, reference)].point:.2f} [{better[(s, reference)].low:.2f}, "
         f"{better[(s, reference)].high:.2f}]"]
        for s in scores
    ]  # fmt: skip
    header = ["setting", "runs", f"IQM, {group} (95% CI)", f"mean, {group} (95% CI)", f"P(X > {reference})"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train and evaluate one setting on several seeds")
    run_parser.add_argument("--data", required=True, help="dataset folder")
    run_parser.add_argument("--store", required=True, help="folder of the sweep's records")
    run_parser.add_argument("--setting", required=True, help="name of the setting (records are keyed by it)")
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run_parser.add_argument("--configs", nargs="+", default=["no_sharing", "scale_cpu", "scale_evidence"])
    run_parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    run_parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (1 thread each when > 1)")
    run_parser.add_argument("--threads", type=int, help="torch threads per run (default: 1 with --jobs > 1, else all)")
    run_parser.add_argument("overrides", nargs="*", help="extra `robocds fit` arguments, after --")
    table_parser = sub.add_parser("table", help="one row per setting")
    table_parser.add_argument("--store", required=True)
    table_parser.add_argument("--data", required=True, help="the dataset the sweep trained on (groups, own success)")
    table_parser.add_argument("--order", nargs="+", help="settings in this order (default: sorted)")
    table_parser.add_argument("--per-task", action="store_true", help="also a per-task table")
    table_parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds' records (same-seed comparisons)")
    table_parser.add_argument("--reference", help="also rliable's intervals, and P(X > this setting)")
    table_parser.add_argument("--group", default="all", help="the task group the intervals are over (default: all)")
    args = parser.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
