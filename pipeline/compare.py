"""One command for the whole comparison: generate data, train every method and seed, evaluate, report.

    robocds-compare --scale cpu --out runs/benchmark-cpu

For each method of its scale (one of ``METHODS``, each a packaged training config) and seed it trains with
``robocds fit --config base --config <method> --config <scale config>``, evaluates the last
checkpoint on held-out evaluation seeds, then writes a report: per-task and average success with 95%
intervals over seeds, the success of a random policy and of the data's own behaviour beside them, a
grouped bar chart, the field's aggregates (IQM, mean and probability of improvement with
stratified-bootstrap intervals, over all tasks and per task group of the recipe), and what each method
routed (sharing matrices as tables and heatmaps, CDS thresholds). Every stage is skipped when its output
already exists, so an interrupted comparison resumes where it stopped (a folder whose dataset came from
another recipe is refused by name rather than reused); stages go seed by seed, so an interrupted
comparison holds the same seeds of every method. With ``--jobs N`` up to N stages run at once, each with
one thread and its output in ``<out>/logs/`` (``robocds.pipeline.stages``). Each stage runs as its own
process (the same console commands a user would type); their outputs are read back through the
typed readers of the packages that write them: the dataset's ``Manifest``, the training run's
``RunLayout`` and the sharing callback's metric keys, the evaluation and analysis summaries.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robocds.datasets.manifest import read_manifest
from robocds.datasets.schema import MANIFEST_FILE, Manifest
from robocds.envs.media import write_png
from robocds.errors import USER_ERROR_STATUS, ConfigError, int_at_least, output_dir, report_error, run_cli
from robocds.eval.aggregate import DEFAULT_REPS
from robocds.eval.analysis import ANALYSIS_FILE, summarize
from robocds.eval.analysis import markdown as analysis_markdown
from robocds.eval.evaluate import SUMMARY_FILE
from robocds.eval.markdown import markdown_table
from robocds.eval.report import AVERAGE, markdown, report
from robocds.files import write_text_atomic
from robocds.pipeline import routing
from robocds.pipeline.stages import Scheduler, Step
from robocds.threads import THREAD_COUNT_VARIABLES
from robocds.train.layout import RunLayout

# Every method robocds-compare can run (--methods), in report order: the sharing methods, then the behaviour-cloning
# references (``model.objective`` bc / filtered_bc on the same network, no sharing; D4RL-style %BC baselines).
METHODS = (
    "no_sharing", "sharing_all", "cds", "cds_percentile", "uds", "share_successes", "cds_heldout", "bc", "filtered_bc"
)  # fmt: skip
NO_SHARING_METHODS = ("no_sharing", "bc", "filtered_bc")  # every task on its own data: no routing to report
QUICK_METHODS = ("no_sharing", "sharing_all", "cds")
PAPER_METHODS = ("no_sharing", "sharing_all", "cds", "cds_percentile")  # cpu and gpu scales (docs/RESULTS.md)
# The pre-registered comparison's methods (docs/PREREGISTRATION.md): fixed, whatever METHODS gains later.
EVIDENCE_METHODS = ("no_sharing", "sharing_all", "cds", "cds_percentile", "uds", "share_successes", "cds_heldout")


@dataclass(frozen=True)
class Scale:
    """How big a comparison is."""

    recipe: str  # packaged dataset recipe (or a recipe file)
    train_configs: tuple[str, ...]  # packaged training configs laid over base + method
    methods: tuple[str, ...]  # methods to compare
    seeds: tuple[int, ...]  # training seeds per method
    eval_episodes: int  # evaluation episodes per task and run
    videos: int  # videos per task and run
    random_episodes: int  # episodes per task of the random-policy reference
    jobs: int = 1  # stages run at once (--jobs overrides); > 1: 1 thread each
    analyse_seeds: tuple[int, ...] | None = None  # seeds whose runs get diagnostics (None: every seed)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs={self.jobs}: must be >= 1")
        if self.analyse_seeds is not None and not set(self.analyse_seeds) <= set(self.seeds):
            raise ValueError(f"analyse_seeds={self.analyse_seeds}: must be among seeds={self.seeds}")


SCALES = {
    # The README's quickstart: a few minutes on 2 CPU cores.
    "quick": Scale("quickstart", ("scale_quick",), QUICK_METHODS, (0,), 20, 1, 20),
    # The benchmark at CPU scale: within 90 minutes on 2 cores.
    "cpu": Scale("benchmark_cpu", ("scale_cpu",), PAPER_METHODS, (0, 1, 2), 50, 2, 50),
    # The benchmark at full scale, for one GPU.
    "gpu": Scale("benchmark", ("gpu", "scale_gpu"), PAPER_METHODS, (0, 1, 2), 50, 2, 50),
    # The pre-registered CDS-regime comparison (borrowers and controls, docs/PREREGISTRATION.md): its seven
    # registered methods x 5 seeds, one stage at a time (two at once measured slower for training here), the network
    # and steps of scale_evidence.yaml, diagnostics for every seed. Its wall time on 2 cores depends on
    # the machine's speed (see the registration).
    "evidence": Scale(
        "benchmark_cpu_replay", ("scale_cpu", "scale_evidence"), EVIDENCE_METHODS, (0, 1, 2, 3, 4), 50, 1, 50
    ),
}


@dataclass(frozen=True)
class ExperimentLayout:
    """The folders of one comparison under ``out``."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def report(self) -> Path:
        return self.out / "report"

    def run(self, name: str) -> RunLayout:
        return RunLayout(self.runs, name)

    def finished_marker(self, name: str) -> Path:
        """Touched once ``robocds fit`` of run ``name`` has returned successfully."""
        return self.run(name).folder / "finished"

    def evaluation(self, name: str) -> Path:
        return self.out / "eval" / name

    def analysis(self, name: str) -> Path:
        return self.out / "analysis" / name

    @property
    def logs(self) -> Path:
        """Each stage's output when stages run concurrently (``--jobs`` > 1)."""
        return self.out / "logs"


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


RANDOM_RUN = "random"


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def stage_workers(workers: int, jobs: int) -> int:
    """Env worker processes of each evaluation when ``jobs`` stages share ``workers`` cores: in-process (0)
    unless every job gets more than 2 (on 2 cores in-process evaluation was the fastest layout, alone and
    next to another stage: docs/PERFORMANCE.md; the results do not depend on it)."""
    share = workers // jobs
    return share if share > 2 else 0


def stage_environment(jobs: int) -> dict[str, str] | None:
    """With concurrent stages, each process gets 1 thread per math library (unless the environment sets
    them): ``jobs`` processes with 1 thread each fill ``jobs`` cores without oversubscribing them."""
    if jobs == 1:
        return None
    return {**{name: "1" for name in THREAD_COUNT_VARIABLES}, **os.environ}


def plan(
    scale: Scale, layout: ExperimentLayout, task_names: tuple[str, ...], workers: int, jobs: int, extra: list[str]
) -> tuple[list[Step], list[Path]]:
    """Every stage, in priority order (each run's evaluation and diagnostics right after its training; every
    method's seed s before any method's seed s + 1, so an interrupted comparison leaves every method the same
    seeds), and the evaluation folders of the runs (the random policy's last)."""
    data, eval_workers = layout.data, stage_workers(workers, jobs)
    configs = [arg for config in scale.train_configs for arg in ("--config", config)]
    random_dir = layout.evaluation(RANDOM_RUN)
    steps = [
        Step(
            "generate", f"generate the dataset (recipe {scale.recipe})", data / MANIFEST_FILE,
            tuple(_python("robocds.datasets.generate", scale.recipe, "--root", str(data), "--workers", str(workers))),
        ),  # every other stage comes after it, so it runs alone, on every core
        Step(
            "evaluate-random", "evaluate a random policy (reference)", random_dir / SUMMARY_FILE,
            tuple(_python("robocds.eval", "--policy", "random", "--out", str(random_dir), "--label", RANDOM_RUN,
                          "--tasks", *task_names, "--episodes", str(scale.random_episodes), "--workers",
                          str(eval_workers), "--videos", "0", "--data", str(data))),
            after=("generate",),
        ),
    ]  # fmt: skip
    eval_dirs = []
    for seed in scale.seeds:
        for method in scale.methods:
            name = run_name(method, seed)
            run, eval_dir, analysis_dir = layout.run(name), layout.evaluation(name), layout.analysis(name)
            steps.append(Step(
                f"train-{name}", f"train {method}, seed {seed}", layout.finished_marker(name),
                tuple(_python("robocds.train", "fit", "--config", "base", "--config", method, *configs,
                              "--data.root", str(data), "--seed_everything", str(seed), "--runs_dir",
                              str(layout.runs), "--run_name", name, *extra)),
                marker=True, after=("generate",), prepare=functools.partial(clear_interrupted_run, layout, name),
            ))  # fmt: skip
            steps.append(Step(
                f"evaluate-{name}", f"evaluate {method}, seed {seed} ({scale.eval_episodes} episodes per task)",
                eval_dir / SUMMARY_FILE,
                tuple(_python("robocds.eval", "--checkpoint", str(run.last_checkpoint), "--out", str(eval_dir),
                              "--label", method, "--episodes", str(scale.eval_episodes), "--workers",
                              str(eval_workers), "--seed", "0", "--videos", str(scale.videos))),
                after=(f"train-{name}",),
            ))  # fmt: skip
            eval_dirs.append(eval_dir)
            if scale.analyse_seeds is None or seed in scale.analyse_seeds:
                steps.append(Step(
                    f"analyse-{name}",
                    f"analyse {method}, seed {seed} (Q on own vs shared data, distance from the data's actions)",
                    analysis_dir / ANALYSIS_FILE,
                    tuple(_python("robocds.eval.analysis", "--checkpoint", str(run.last_checkpoint), "--data",
                                  str(data), "--out", str(analysis_dir))),
                    after=(f"train-{name}",),
                ))  # fmt: skip
    return steps, eval_dirs + [random_dir]


def clear_interrupted_run(layout: ExperimentLayout, name: str) -> None:
    """An interrupted run (its folder without the finished marker) trains again from scratch."""
    run = layout.run(name)
    if run.folder.exists() and not layout.finished_marker(name).exists():
        shutil.rmtree(run.folder.parent)


def run_comparison(
    scale: Scale,
    out: Path,
    workers: int,
    extra_train_args: list[str],
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    jobs: int | None = None,
) -> dict:
    """Generate, then train, evaluate and analyse every run with ``jobs`` stages at a time (default: the
    scale's), then report."""
    from robocds.datasets.recipe import load_recipe

    jobs = scale.jobs if jobs is None else jobs
    layout = ExperimentLayout(out)
    out.mkdir(parents=True, exist_ok=True)
    check_existing_data(layout.data, scale.recipe)
    task_names = load_recipe(scale.recipe).task_names  # the manifest's order: tasks are recorded in recipe order
    steps, eval_dirs = plan(scale, layout, task_names, workers, jobs, extra_train_args)
    scheduler = Scheduler(jobs, layout.logs, stage_environment(jobs), total=len(steps) + 1)
    scheduler.run(steps)
    scheduler.finished += 1
    scheduler.progress("report")
    return write_report(layout, eval_dirs, read_dataset(layout.data), scale, reps, seed)


def read_dataset(data: Path) -> Manifest:
    """The dataset's manifest; an unreadable one is a ``DatasetError`` (one line naming the file and field)."""
    return read_manifest(str(data))


def check_existing_data(data: Path, recipe: str) -> None:
    """Refuse to resume on a dataset generated from another recipe (generation would be skipped as done)."""
    if not (data / MANIFEST_FILE).is_file():
        return
    from robocds.datasets.recipe import load_recipe

    wanted, found = load_recipe(recipe).name, read_dataset(data).name
    if found != wanted:
        raise ConfigError(
            f"{data / MANIFEST_FILE}: holds dataset {found!r} but the recipe is {wanted!r}: "
            "choose another --out, or the recipe that folder was made with"
        )


def method_analyses(layout: ExperimentLayout, scale: Scale) -> dict[str, dict]:
    """Per method, the diagnostics of ``robocds.eval.analysis`` averaged over its seeds' runs."""
    summaries = {}
    for method in scale.methods:
        paths = [layout.analysis(run_name(method, seed)) / ANALYSIS_FILE for seed in scale.seeds]
        results = [json.loads(path.read_text()) for path in paths if path.is_file()]
        if results:
            summaries[method] = summarize(results)
    return summaries


def data_success_rates(manifest: Manifest) -> dict[str, float]:
    """The data's own behaviour: each task's episode success rate in the dataset's manifest."""
    return {task.name: task.success_rate for task in manifest.tasks}


def routing_section(layout: ExperimentLayout, scale: Scale, tasks: list[str]) -> list[str]:
    """Report lines on what each method routed (``robocds.pipeline.routing``), with a heatmap per method in
    ``report/sharing/``; none when no run logged a sharing matrix."""
    from robocds.heatmap import sharing_heatmap

    lines, thresholds = [], {}
    for method in scale.methods:
        csvs = [layout.run(run_name(method, seed)).metrics_csv for seed in scale.seeds]
        matrix = routing.sharing_matrix(csvs, tasks)
        if matrix is None or method in NO_SHARING_METHODS:  # their matrix is the identity by construction
            continue
        title = f"{method}: mean weight of source j's transitions routed into target i"
        write_png(layout.report / "sharing" / f"{method}.png", sharing_heatmap(matrix, tasks, title))
        lines += ["", f"### {method} (`sharing/{method}.png`)", "", routing.matrix_markdown(matrix, tasks)]
        if (values := routing.thresholds(csvs, tasks)) is not None:
            thresholds[method] = values
    if thresholds:
        lines += ["", "### CDS thresholds (Q_i the routed Q-values are compared with)", ""]
        lines.append(routing.thresholds_markdown(thresholds, tasks))
    if not lines:
        return []
    intro = "Mean weight of each source task's transitions routed into each target, over training and seeds."
    return ["", "## Routing", "", intro, *lines]


def write_report(
    layout: ExperimentLayout,
    eval_dirs: list[Path],
    manifest: Manifest,
    scale: Scale,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """The comparison's report: per-task table and bar chart, the rliable section over all tasks and each
    task group of the scale's recipe (``reps`` bootstrap replicates from ``seed``), behaviour, sharing,
    diagnostics."""
    from robocds.datasets.recipe import load_recipe

    report_dir = layout.report
    groups = load_recipe(scale.recipe).groups  # the recipe's current groups: they may be added after generation
    comparison = report([str(d) for d in eval_dirs], report_dir, groups, list(scale.methods), reps, seed)
    behaviour = data_success_rates(manifest)
    lines = ["# Comparison", "", markdown(comparison)]
    if behaviour:
        lines += ["", "Success of the data's own behaviour (the noisy oracles that collected it):", ""]
        rows = [[task, f"{rate:.1%}"] for task, rate in behaviour.items()]
        rows.append([f"**{AVERAGE}**", f"{np.mean(list(behaviour.values())):.1%}"])
        lines.append(markdown_table(["task", "data success"], rows))
    lines += routing_section(layout, scale, comparison["tasks"])
    analyses = method_analyses(layout, scale)
    if analyses:
        lines += ["", "## Diagnostics (held-out episodes, mean over seeds)", "", analysis_markdown(analyses)]
        write_text_atomic(report_dir / "analysis.json", json.dumps(analyses, indent=1) + "\n")
    text = "\n".join(lines) + "\n"
    write_text_atomic(report_dir / "README.md", text)
    print(text)
    print(f"outputs: {report_dir} (README.md, report.md, success.png, aggregate/, sharing/); runs: {layout.runs}")
    return comparison


def with_overrides(
    scale: Scale,
    recipe: str | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int | None = None,
) -> Scale:
    """``scale`` with the recipe, methods, seeds or jobs given on the command line in place of its own (the
    seeds analysed stay those of the scale that are still run)."""
    seeds_run = tuple(seeds or scale.seeds)
    analysed = None if scale.analyse_seeds is None else tuple(s for s in scale.analyse_seeds if s in seeds_run)
    return dataclasses.replace(
        scale,
        recipe=recipe or scale.recipe,
        methods=tuple(methods or scale.methods),
        seeds=seeds_run,
        jobs=jobs or scale.jobs,
        analyse_seeds=analysed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robocds-compare", description="Generate, train every method and seed, evaluate, and report."
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--out", help="output folder (default: runs/compare-<scale>)")
    parser.add_argument(
        "--workers", type=int_at_least(0), default=os.cpu_count() or 1, help="generation and evaluation workers"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help="override the scale's methods (bc, filtered_bc: references)"
    )
    parser.add_argument("--seeds", nargs="+", type=int_at_least(0), help="override the scale's seeds")
    parser.add_argument("--recipe", help="override the scale's dataset recipe (a packaged name or a recipe file)")
    parser.add_argument(
        "--jobs", type=int_at_least(1), help="stages run at once, 1 thread each (default: the scale's; all use 1)"
    )
    parser.add_argument(
        "--bootstrap-reps", type=int_at_least(1), default=DEFAULT_REPS, help="bootstrap replicates of the report"
    )
    parser.add_argument("--bootstrap-seed", type=int_at_least(0), default=0, help="seed of the report's bootstrap")
    parser.add_argument("train_args", nargs="*", help="extra arguments for `robocds fit`, after --")
    args = parser.parse_args(argv)
    scale = with_overrides(SCALES[args.scale], args.recipe, args.methods, args.seeds, args.jobs)
    out = output_dir(args.out or f"runs/compare-{args.scale}")
    from robocds.datasets.recipe import load_recipe

    load_recipe(scale.recipe)  # a bad recipe fails now, not after the output folder is made
    start = time.perf_counter()
    try:
        run_comparison(scale, out, args.workers, args.train_args, args.bootstrap_reps, args.bootstrap_seed)
    except subprocess.CalledProcessError as err:  # the stage printed its own error (or traceback) above
        message = f"a stage failed (exit code {err.returncode}): {' '.join(err.cmd)}"
        if err.returncode == USER_ERROR_STATUS:
            raise ConfigError(message) from None
        report_error("robocds-compare", message)
        return 1
    print(f"wall time: {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-compare``)."""
    run_cli(main, "robocds-compare")


if __name__ == "__main__":
    cli()
