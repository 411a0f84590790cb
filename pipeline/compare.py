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

With ``--store <folder>`` (``robocds.pipeline.store``, docs/STORE.md) every finished run is also kept as a
small record in a folder meant to be committed: a run whose record is there is not run again (on any
machine, in any ``--out``), the report is made from the records alone (``--report-only`` rebuilds it, byte
for byte), and a record of another dataset, configuration or code version is refused unless mixing is asked
for (``--allow-mixed``).
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
from typing import TYPE_CHECKING, Any

import numpy as np

from robocds.config import TRAINING_SEED_MAX
from robocds.datasets.manifest import read_manifest
from robocds.datasets.schema import MANIFEST_FILE, Manifest
from robocds.envs.media import write_png
from robocds.errors import USER_ERROR_STATUS, ConfigError, int_at_least, output_dir, repeated, report_error, run_cli
from robocds.eval.aggregate import DEFAULT_REPS
from robocds.eval.analysis import ANALYSIS_FILE, summarize
from robocds.eval.analysis import markdown as analysis_markdown
from robocds.eval.evaluate import SUMMARY_FILE
from robocds.eval.markdown import markdown_table
from robocds.eval.report import AVERAGE, load_summaries, markdown, report_summaries
from robocds.files import write_text_atomic
from robocds.pipeline import ray_executor, routing
from robocds.pipeline.stages import Launcher, Scheduler, Step
from robocds.pipeline.store import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MIXABLE,
    RECORD_FILE,
    RUNS_FOLDER,
    CodeIdentity,
    ResultsStore,
    check_key,
    current_code,
    episode_columns,
    machine,
    recorded_commit,
    sha256_file,
)
from robocds.threads import THREAD_COUNT_VARIABLES
from robocds.train.layout import RunLayout, packaged_config

if TYPE_CHECKING:
    from robocds.datasets.recipe import Recipe

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


def study_runs(scale: Scale) -> list[tuple[str, str, int]]:
    """(run name, method, seed) of every run of ``scale``, in plan order: every method's seed s before any
    method's seed s + 1."""
    return [(run_name(method, seed), method, seed) for seed in scale.seeds for method in scale.methods]


def plan(
    scale: Scale,
    layout: ExperimentLayout,
    task_names: tuple[str, ...],
    workers: int,
    jobs: int,
    extra: list[str],
    study: Study | None = None,
) -> tuple[list[Step], list[Path]]:
    """Every stage, in priority order (each run's evaluation and diagnostics right after its training; every
    method's seed s before any method's seed s + 1, so an interrupted comparison leaves every method the same
    seeds), and the evaluation folders of the runs (the random policy's last).

    With a results ``study``, a run whose record is in its store has no stage at all, every other run ends with
    a stage writing its record, and nothing (not even the dataset) is made when every run is in the store.
    """
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
    for name, method, seed in study_runs(scale):
        eval_dirs.append(layout.evaluation(name))
        if study is not None and study.store.has(name):
            continue
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
        stages = [f"train-{name}", f"evaluate-{name}"]
        if scale.analyse_seeds is None or seed in scale.analyse_seeds:
            steps.append(Step(
                f"analyse-{name}",
                f"analyse {method}, seed {seed} (Q on own vs shared data, distance from the data's actions)",
                analysis_dir / ANALYSIS_FILE,
                tuple(_python("robocds.eval.analysis", "--checkpoint", str(run.last_checkpoint), "--data",
                              str(data), "--out", str(analysis_dir))),
                after=(f"train-{name}",),
            ))  # fmt: skip
            stages.append(f"analyse-{name}")
        if study is not None:  # a record holds the random policy's results too: each is whole on its own
            steps.append(study.record_step(layout, name, method, seed, ("evaluate-random", *stages)))
    if study is not None and len(steps) == 2:
        steps = []  # every run is in the store: no data, no reference needed
    return steps, eval_dirs + [random_dir]


def clear_interrupted_run(layout: ExperimentLayout, name: str) -> None:
    """An interrupted run (its folder without the finished marker) trains again from scratch."""
    run = layout.run(name)
    if run.folder.exists() and not layout.finished_marker(name).exists():
        shutil.rmtree(run.folder.parent)


def config_files(args: list[str]) -> dict[str, str | None]:
    """sha256 of every file ``--config`` names in ``robocds fit`` arguments, by the name given (None: no file)."""
    names = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-c", "--config")]
    names += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    return {name: None if (path := packaged_config(name)) is None else sha256_file(path) for name in names}


def run_key(scale: Scale, method: str, seed: int, extra: list[str], code: str, recipe: Recipe) -> dict:
    """What must agree for a record to belong to a study (``robocds.pipeline.store.KEY_KINDS`` says what a
    difference in each field means): the dataset (``recipe``, the scale's), the run, how it was trained and
    evaluated, the code."""
    key: dict = {"recipe": recipe.name, "fingerprint": recipe.fingerprint(), "method": method, "seed": seed}
    configs = ["base", method, *scale.train_configs]
    fit = [arg for config in configs for arg in ("--config", config)] + list(extra)
    return {
        **key,
        "train_configs": configs,
        "config_files": config_files(fit),
        "train_args": list(extra),
        "episodes": scale.eval_episodes,
        "reference_episodes": scale.random_episodes,
        "code": code,
    }


@dataclass(frozen=True)
class Study:
    """A comparison kept in a results store (``--store``, ``robocds.pipeline.store``): the key each of its runs'
    records must have, and how a finished run's record is written."""

    store: ResultsStore
    scale_name: str  # the --scale the records were made with (recorded, not compared: the key holds what matters)
    keys: dict[str, dict]  # run name -> the key its record must have
    code: CodeIdentity  # the code this comparison runs
    allow: tuple[str, ...] = ()  # kinds of difference (MIXABLE) that do not refuse a record
    checkpoint_limit: int = 0  # bytes: a last checkpoint no larger is copied into its record (0: none is)

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.allow if kind not in MIXABLE]
        if unknown:
            raise ValueError(f"allow={self.allow}: {unknown} cannot be mixed (only {MIXABLE})")
        if self.checkpoint_limit < 0:
            raise ValueError(f"checkpoint_limit={self.checkpoint_limit}: must be >= 0")

    @classmethod
    def of(
        cls,
        root: Path,
        scale_name: str,
        scale: Scale,
        extra: list[str],
        allow: tuple[str, ...] = (),
        checkpoint_limit: int = 0,
        code: CodeIdentity | None = None,
    ) -> Study:
        """The study of ``scale`` (its methods x seeds) in the store at ``root``."""
        from robocds.datasets.recipe import load_recipe

        code, recipe = current_code() if code is None else code, load_recipe(scale.recipe)
        keys = {
            name: run_key(scale, method, seed, extra, code.version, recipe) for name, method, seed in study_runs(scale)
        }
        return cls(ResultsStore(root), scale_name, keys, code, tuple(allow), checkpoint_limit)

    def check(self) -> list[str]:
        """Read every record of the study's runs in the store, refusing (one line) one whose key disagrees with
        the study's; the runs in the store."""
        recorded = []
        for name, wanted in self.keys.items():
            record = self.store.read(name)
            if record is not None:
                check_key(
                    self.store.record_path(name), record["key"], wanted, self.allow, commit=recorded_commit(record)
                )
                recorded.append(name)
        return recorded

    def record_step(self, layout: ExperimentLayout, name: str, method: str, seed: int, after: tuple[str, ...]) -> Step:
        """The stage that writes run ``name``'s record once its stages ``after`` are done (in this process)."""
        write = functools.partial(write_record, self, layout, name, any(key.startswith("analyse-") for key in after))
        return Step(f"record-{name}", f"record {method}, seed {seed} in {self.store.root}",
                    self.store.record_path(name), action=write, after=after)  # fmt: skip


def write_record(study: Study, layout: ExperimentLayout, name: str, analysed: bool) -> None:
    """Write run ``name``'s record from what its stages left in ``layout`` (``robocds.pipeline.store``), with the
    random policy's results (per task) and the data's success beside it: the references of its report."""
    from robocds.datasets.recipe import recipe_from_dict

    manifest = read_dataset(layout.data)
    summary = json.loads((layout.evaluation(name) / SUMMARY_FILE).read_text())
    evaluation = {key: value for key, value in summary.items() if key != "episodes"}
    evaluation["episodes"] = episode_columns(summary.get("episodes", []))  # per task, a list per field
    random = json.loads((layout.evaluation(RANDOM_RUN) / SUMMARY_FILE).read_text())
    record: dict = {
        "key": study.keys[name],
        "scale": study.scale_name,
        "code": study.code.to_json_dict(),
        "written_by": machine(),
        "dataset": {
            "name": manifest.name,
            "fingerprint": recipe_from_dict(manifest.recipe, str(layout.data / MANIFEST_FILE)).fingerprint(),
            "data_success": data_success_rates(manifest),
        },
        "evaluation": evaluation,
        "reference": {key: value for key, value in random.items() if key != "episodes"},
    }
    run = layout.run(name)
    record["logged_means"] = routing.logged_means(run.metrics_csv) if run.metrics_csv.is_file() else {}
    record["analysis"] = json.loads((layout.analysis(name) / ANALYSIS_FILE).read_text()) if analysed else None
    checkpoint, files = run.last_checkpoint, {}
    size = checkpoint.stat().st_size
    stored = 0 < size <= study.checkpoint_limit
    record["checkpoint"] = {"bytes": size, "sha256": sha256_file(checkpoint), "stored": stored}
    if run.config.is_file():
        files[CONFIG_FILE] = run.config.read_bytes()
    if stored:
        files[CHECKPOINT_FILE] = checkpoint
    study.store.write(name, record, files)


def run_comparison(
    scale: Scale,
    out: Path,
    workers: int,
    extra_train_args: list[str],
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    jobs: int | None = None,
    study: Study | None = None,
    launch: Launcher = subprocess.Popen,
    executor: ray_executor.RayExecutor | None = None,
) -> dict:
    """Generate, then train, evaluate and analyse every run with ``jobs`` stages at a time (default: the
    scale's), then report. With a results ``study``, the runs in its store are not run again, every other run
    is recorded there when it is done, and the report is made from the store's records alone. With a Ray
    ``executor`` the stages run on its cluster (``robocds.pipeline.ray_executor``)."""
    from robocds.datasets.recipe import load_recipe

    jobs = scale.jobs if jobs is None else jobs
    layout = ExperimentLayout(out)
    recorded = [] if study is None else study.check()  # a record of another study refuses before any work
    if recorded:
        print(f"in the results store {study.store.root}, not run again: {', '.join(recorded)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if executor is not None:  # --out as every node sees it; each evaluation has its stage's CPUs
        out = executor.prepare(out)
        layout, (workers, jobs) = ExperimentLayout(out), executor.stage_layout()
    check_existing_data(layout.data, scale.recipe)
    task_names = load_recipe(scale.recipe).task_names  # the manifest's order: tasks are recorded in recipe order
    steps, eval_dirs = plan(scale, layout, task_names, workers, jobs, extra_train_args, study)
    if executor is None:
        scheduler = Scheduler(jobs, layout.logs, stage_environment(jobs), launch=launch, total=len(steps) + 1)
    else:
        scheduler = executor.scheduler(layout.logs, total=len(steps) + 1)
    scheduler.run(steps)
    scheduler.finished += 1
    scheduler.progress("report")
    if study is not None:
        return render_report(layout.report, store_results(study, scale), scale, reps, seed)
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
    return summarize_analyses(folder_analyses(layout, scale))


def folder_analyses(layout: ExperimentLayout, scale: Scale) -> dict[str, list[dict]]:
    """Per method, the diagnostics of its seeds' runs that were analysed, from the comparison's folder."""
    analyses = {}
    for method in scale.methods:
        paths = [layout.analysis(run_name(method, seed)) / ANALYSIS_FILE for seed in scale.seeds]
        analyses[method] = [json.loads(path.read_text()) for path in paths if path.is_file()]
    return analyses


def summarize_analyses(analyses: dict[str, list[dict]]) -> dict[str, dict]:
    """Each method's diagnostics averaged over its runs (a method without any is left out)."""
    return {method: summarize(results) for method, results in analyses.items() if results}


def data_success_rates(manifest: Manifest) -> dict[str, float]:
    """The data's own behaviour: each task's episode success rate in the dataset's manifest."""
    return {task.name: task.success_rate for task in manifest.tasks}


@dataclass(frozen=True)
class StudyResults:
    """What a comparison's report reads: from the comparison's folder, or from a results store's records."""

    summaries: list[dict]  # evaluation summaries with their "_folder": runs in plan order, the random policy last
    logged: dict[str, list[dict[str, float]]]  # method -> each run's mean over training of every sharing scalar
    analyses: dict[str, list[dict]]  # method -> the diagnostics of its analysed runs
    data_success: dict[str, float]  # task -> success of the data's own behaviour
    commits: list[list[str]] | None = None  # [run, commit, code version] of every run (a store's report only)
    missing: tuple[str, ...] = ()  # runs of the study that have no record in the store


def folder_results(layout: ExperimentLayout, eval_dirs: list[Path], manifest: Manifest, scale: Scale) -> StudyResults:
    """The report's inputs from a comparison's folder (every evaluation folder in ``eval_dirs`` must exist)."""
    logged = {
        method: [routing.logged_means(csv) for seed in scale.seeds
                 if (csv := layout.run(run_name(method, seed)).metrics_csv).is_file()]
        for method in scale.methods
    }  # fmt: skip
    return StudyResults(load_summaries(eval_dirs), logged, folder_analyses(layout, scale), data_success_rates(manifest))


def store_results(study: Study, scale: Scale, reference: bool = False) -> StudyResults:
    """The report's inputs from the records of ``study``'s runs in its store, each checked against the study's
    key, or with ``reference`` (a report from the store alone) by ``check_store_consistency``. Runs without a
    record are left out (and listed); a store without any of the study's records is refused. The random
    policy's results and the data's success are those of the first record, in plan order."""
    runs = study_runs(scale)
    records, missing = {}, []
    first: dict[str, tuple[Path, Any]] = {}  # what the store's first records say (a report from the store alone)
    for name, _, _ in runs:
        record, path = study.store.read(name), study.store.record_path(name)
        if record is None:
            missing.append(name)
            continue
        if reference:
            check_store_consistency(study, name, path, record, first)
        else:
            check_key(path, record["key"], study.keys[name], study.allow, commit=recorded_commit(record))
        records[name] = record
    if not records:
        raise ConfigError(
            f"--store {str(study.store.root)!r}: no record of this study's runs ({', '.join(n for n, _, _ in runs)}) "
            f"under {study.store.root / RUNS_FOLDER}"
        )
    summaries = [{**record["evaluation"], "_folder": f"{RUNS_FOLDER}/{name}"} for name, record in records.items()]
    name, record = next(iter(records.items()))
    summaries.append({**record["reference"], "_folder": f"{RUNS_FOLDER}/{name}/{RECORD_FILE}:reference"})
    logged: dict[str, list[dict[str, float]]] = {method: [] for method in scale.methods}
    analyses: dict[str, list[dict]] = {method: [] for method in scale.methods}
    commits = []
    for name, method, _ in runs:
        if (record := records.get(name)) is None:
            continue
        code = CodeIdentity(**record["code"])
        commits.append([name, code.describe(), code.version[:12]])
        if record.get("logged_means"):
            logged[method].append(record["logged_means"])
        if record.get("analysis") is not None:
            analyses[method].append(record["analysis"])
    data_success = next(iter(records.values()))["dataset"]["data_success"]
    return StudyResults(summaries, logged, analyses, data_success, commits, tuple(missing))


def check_store_consistency(
    study: Study, name: str, path: Path, record: dict, first: dict[str, tuple[Path, Any]]
) -> None:
    """Check a record for a report from the store alone, where the code and the configs may have moved on since
    the study ran: its dataset, run, configs' names and episodes against the study's; its code, training
    arguments and each config file's digest against the first record (in plan order) that has them."""
    key, wanted = record["key"], study.keys[name]
    named = [f for f in ("recipe", "fingerprint", "method", "seed", "train_configs", "episodes", "reference_episodes")
             if f in wanted]  # fmt: skip
    check_key(path, {f: key.get(f) for f in named}, {f: wanted[f] for f in named}, study.allow)
    fields: list[tuple[str, str | None, Any]] = [
        ("code", None, key.get("code")),
        ("train_args", None, key.get("train_args")),
    ]
    fields += [("config_files", config, digest) for config, digest in (key.get("config_files") or {}).items()]
    for field, member, value in fields:
        first_path, first_value = first.setdefault(f"{field}.{member}", (path, value))
        found, reference = ({member: value}, {member: first_value}) if member else (value, first_value)
        check_key(path, {field: found}, {field: reference}, study.allow, f"the store's {first_path} has")


def routing_section(report_dir: Path, logged: dict[str, list[dict[str, float]]], tasks: list[str]) -> list[str]:
    """Report lines on what each method routed (``robocds.pipeline.routing``, from each run's ``logged_means``),
    with a heatmap per method in ``report/sharing/``; none when no run logged a sharing matrix."""
    from robocds.heatmap import sharing_heatmap

    lines, thresholds = [], {}
    for method, runs in logged.items():
        matrix = routing.sharing_matrix_of(runs, tasks)
        if matrix is None or method in NO_SHARING_METHODS:  # their matrix is the identity by construction
            continue
        title = f"{method}: mean weight of source j's transitions routed into target i"
        write_png(report_dir / "sharing" / f"{method}.png", sharing_heatmap(matrix, tasks, title))
        lines += ["", f"### {method} (`sharing/{method}.png`)", "", routing.matrix_markdown(matrix, tasks)]
        if (values := routing.thresholds_of(runs, tasks)) is not None:
            thresholds[method] = values
    if thresholds:
        lines += ["", "### CDS thresholds (Q_i the routed Q-values are compared with)", ""]
        lines.append(routing.thresholds_markdown(thresholds, tasks))
    if not lines:
        return []
    intro = "Mean weight of each source task's transitions routed into each target, over training and seeds."
    return ["", "## Routing", "", intro, *lines]


def runs_section(results: StudyResults) -> list[str]:
    """A store's report: the commit and code version every run was recorded with, and the runs not in the store."""
    if results.commits is None:
        return []
    lines = [
        "", "## Runs (results store)", "",
        "Every run above is a record of the results store (`runs/<run>/record.json`), made by this commit and "
        "code version (sha256 of the project's Python sources):", "",
        markdown_table(["run", "commit", "code version"], results.commits),
    ]  # fmt: skip
    if results.missing:
        lines += ["", f"Not in the store, so not in this report: {', '.join(results.missing)}."]
    return lines


def write_report(
    layout: ExperimentLayout,
    eval_dirs: list[Path],
    manifest: Manifest,
    scale: Scale,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """The comparison's report from its folder (``render_report`` of ``folder_results``)."""
    return render_report(layout.report, folder_results(layout, eval_dirs, manifest, scale), scale, reps, seed)


def render_report(
    report_dir: Path, results: StudyResults, scale: Scale, reps: int = DEFAULT_REPS, seed: int = 0
) -> dict:
    """The comparison's report: per-task table and bar chart, the rliable section over all tasks and each
    task group of the scale's recipe (``reps`` bootstrap replicates from ``seed``), behaviour, sharing,
    diagnostics (and, from a store, every run's commit). The same ``results`` give the same files, byte for
    byte."""
    from robocds.datasets.recipe import load_recipe

    groups = load_recipe(scale.recipe).groups  # the recipe's current groups: they may be added after generation
    comparison = report_summaries(results.summaries, report_dir, groups, list(scale.methods), reps, seed)
    behaviour = results.data_success
    lines = ["# Comparison", "", markdown(comparison)]
    if behaviour:
        lines += ["", "Success of the data's own behaviour (the noisy oracles that collected it):", ""]
        rows = [[task, f"{rate:.1%}"] for task, rate in behaviour.items()]
        rows.append([f"**{AVERAGE}**", f"{np.mean(list(behaviour.values())):.1%}"])
        lines.append(markdown_table(["task", "data success"], rows))
    lines += routing_section(report_dir, results.logged, comparison["tasks"])
    analyses = summarize_analyses(results.analyses)
    if analyses:
        diagnostics = analysis_markdown(analyses).rstrip("\n")
        lines += ["", "## Diagnostics (held-out episodes, mean over seeds)", "", diagnostics]
        write_text_atomic(report_dir / "analysis.json", json.dumps(analyses, indent=1) + "\n")
    lines += runs_section(results)
    text = "\n".join(lines) + "\n"
    write_text_atomic(report_dir / "README.md", text)
    print(text)
    print(f"outputs: {report_dir} (README.md, report.md, success.png, aggregate/, sharing/)")
    return comparison


def with_overrides(
    scale: Scale,
    recipe: str | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int | None = None,
) -> Scale:
    """``scale`` with the recipe, methods, seeds or jobs given on the command line in place of its own (the
    seeds analysed stay those of the scale that are still run). A method or seed given twice is refused."""
    for flag, given in (("--methods", methods), ("--seeds", seeds)):
        if twice := repeated(given or ()):
            raise ConfigError(f"{flag} {' '.join(map(str, given))}: {twice} given more than once")
    too_large = [seed for seed in seeds or () if seed > TRAINING_SEED_MAX]
    if too_large:
        raise ConfigError(f"--seeds {' '.join(map(str, seeds or ()))}: {too_large} above {TRAINING_SEED_MAX}")
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


COMPARE_OWNED_FIT_FLAGS = ("--data.root", "--seed_everything", "--runs_dir", "--run_name", "--trainer.default_root_dir")


def check_training_arguments(scale: Scale, out: Path, extra: list[str]) -> None:
    """Every method's ``robocds fit`` command line, checked before the first stage (it parses and the data
    settings pass), so that a bad argument after ``--`` is refused before the dataset is generated."""
    from robocds.train.cli import check_fit_arguments

    owned = sorted({arg.split("=")[0] for arg in extra if arg.split("=")[0] in COMPARE_OWNED_FIT_FLAGS})
    if owned:
        raise ConfigError(
            f"training arguments (after --): {', '.join(owned)}: set by robocds-compare for every run "
            "(the dataset it generates, each seed, the run folders); use --out, --seeds or --recipe instead"
        )
    configs = [arg for config in scale.train_configs for arg in ("--config", config)]
    data = str(ExperimentLayout(out).data)
    for method in scale.methods:
        try:
            check_fit_arguments(["--config", "base", "--config", method, *configs, "--data.root", data, *extra])
        except ConfigError as err:
            raise ConfigError(f"training arguments (after --) for {method}: {err}") from None


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
    parser.add_argument(
        "--store",
        help="results store (a folder meant to be committed, e.g. docs/results/<study>): every finished run is "
        "recorded there, runs recorded there are not run again, the report is made from its records (docs/STORE.md)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from the --store's records, into "
        "<--out>/report (default: <store>/report)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-mixed", nargs="+", choices=MIXABLE, default=[],
        help="report records of another training configuration (config) or code version (code) together",
    )  # fmt: skip
    parser.add_argument(
        "--store-checkpoints", type=int_at_least(0), default=0, metavar="KB",
        help="copy a run's last checkpoint into its record when it is at most KB kilobytes (default 0: never)",
    )  # fmt: skip
    ray_executor.add_arguments(parser)
    parser.add_argument("train_args", nargs="*", help="extra arguments for `robocds fit`, after --")
    args = parser.parse_args(argv)
    executor = ray_executor.executor_of(args)
    scale = with_overrides(SCALES[args.scale], args.recipe, args.methods, args.seeds, args.jobs)
    if args.report_only and not args.store:
        raise ConfigError("--report-only: needs the --store to rebuild the report from")
    if args.report_only and args.train_args:
        raise ConfigError(f"--report-only: trains nothing, so takes no `robocds fit` arguments ({args.train_args})")
    store = None if args.store is None else output_dir(args.store, "--store")
    default_out = store if args.report_only else f"runs/compare-{args.scale}"
    out = output_dir(args.out or default_out)
    from robocds.datasets.recipe import load_recipe

    load_recipe(scale.recipe)  # a bad recipe fails now, not after the output folder is made
    study = None
    if store is not None:
        study = Study.of(
            store, args.scale, scale, args.train_args, tuple(args.allow_mixed), args.store_checkpoints * 1024
        )
    if args.report_only:
        render_report(
            ExperimentLayout(out).report, store_results(study, scale, reference=True), scale, args.bootstrap_reps,
            args.bootstrap_seed,
        )  # fmt: skip
        return 0
    check_training_arguments(scale, out, args.train_args)
    start = time.perf_counter()
    try:
        run_comparison(
            scale, out, args.workers, args.train_args, args.bootstrap_reps, args.bootstrap_seed, study=study,
            executor=executor,
        )  # fmt: skip
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
