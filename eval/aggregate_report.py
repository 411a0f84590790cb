"""The rliable section of a comparison report: IQM, mean and probability of improvement per task group.

From the evaluation summaries (one per run: the method's ``label`` and per-task success), it builds
one score matrix [runs, tasks] per method and aggregates it over all tasks and over each task group
(a recipe's ``groups``, e.g. borrowers and controls): IQM and mean success with 95% stratified-bootstrap
intervals, the probability of improvement of every method over each baseline (No Sharing, Sharing All)
with its interval, and three figures with one panel per group (intervals, probabilities, performance
profiles) under ``<report folder>/aggregate/``. The bootstrap is seeded, so the same summaries give the same section.
With a single run of a method there is no spread over seeds to resample: its point estimates are
reported and its intervals are left out, with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robocds.eval.aggregate import (
    DEFAULT_REPS,
    METRICS,
    MIN_RUNS,
    improvement_probabilities,
    interval_estimates,
    interval_plot,
    performance_profiles,
    probability_plot,
    profile_plot,
)
from robocds.eval.markdown import markdown_table

BASELINES = ("no_sharing", "sharing_all")  # every method's probability of improvement is taken over these
ALL_TASKS = "all tasks"
FOLDER = "aggregate"  # figures, relative to the report folder


def score_matrices(
    summaries: Sequence[Mapping], methods: Sequence[str] | None = None
) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """(tasks, {method: success [runs, tasks]}, notes) from evaluation summaries.

    ``methods`` picks labels and their order (default: every label, in order of appearance). Rows are a
    method's runs in the order of ``summaries``; columns the tasks that every run of every picked method
    evaluated, in order of appearance (the others are left out, with a note).
    """
    labels = list(dict.fromkeys(s["label"] for s in summaries))
    wanted = list(methods) if methods is not None else labels
    notes = [f"{method}: no evaluated runs, left out" for method in wanted if method not in labels]
    runs = {m: [s for s in summaries if s["label"] == m] for m in wanted if m in labels}
    seen = list(dict.fromkeys(task for rs in runs.values() for s in rs for task in s["per_task"]))
    tasks = [task for task in seen if all(task in s["per_task"] for rs in runs.values() for s in rs)]
    if len(tasks) < len(seen):
        notes.append(f"left out (not evaluated in every run): {', '.join(t for t in seen if t not in tasks)}")
    scores = {m: np.array([[s["per_task"][t]["success_rate"] for t in tasks] for s in rs]) for m, rs in runs.items()}
    return tasks, scores, notes


FIGURES = {"intervals": "intervals.png", "improvement": "improvement.png", "profiles": "profiles.png"}


def aggregate_section(
    summaries: Sequence[Mapping],
    out_dir: str | Path,
    groups: Mapping[str, Sequence[str]] | None = None,
    methods: Sequence[str] | None = None,
    baselines: Sequence[str] = BASELINES,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """Aggregate ``summaries`` over all tasks and each group; three figures (one panel per group) go to
    ``out_dir/aggregate``.

    Returns the section as a JSON-ready dict (``aggregate_markdown`` renders it); an estimate without
    ``low``/``high`` has no interval (fewer than ``MIN_RUNS`` runs).
    """
    if reps < 1:
        raise ValueError(f"reps={reps}: must be >= 1")
    tasks, scores, notes = score_matrices(summaries, methods)
    section = {"reps": reps, "seed": seed, "runs": {m: len(s) for m, s in scores.items()}, "groups": []}
    if not scores or not tasks:
        section["notes"] = [*notes, "nothing to aggregate: no method has a task evaluated in all of its runs"]
        return section
    few = [f"{m} ({len(s)} run)" for m, s in scores.items() if len(s) < MIN_RUNS]
    if few:
        notes.append(f"fewer than {MIN_RUNS} runs, so no interval (no spread over seeds to resample): {', '.join(few)}")
    present = [b for b in baselines if b in scores]
    pairs = [(method, base) for base in present for method in scores if method != base]
    panels: dict[str, dict] = {kind: {} for kind in FIGURES}
    for name, members in [(ALL_TASKS, tasks), *(groups or {}).items()]:
        kept = [t for t in members if t in tasks]
        if len(kept) < len(members):
            missing = ", ".join(t for t in members if t not in tasks)
            notes.append(f"group {name}: {missing} not evaluated in every run" + ("; group left out" * (not kept)))
        if not kept:
            continue
        group = {m: s[:, [tasks.index(t) for t in kept]] for m, s in scores.items()}
        estimates = interval_estimates(group, reps=reps, seed=seed)
        probabilities = improvement_probabilities(group, pairs, reps=reps, seed=seed)
        title = f"{name} ({len(kept)} task{'s' * (len(kept) > 1)})"
        panels["intervals"][title] = estimates
        panels["improvement"][title] = probabilities
        panels["profiles"][title] = performance_profiles(group, reps=reps, seed=seed)
        section["groups"].append(
            {
                "name": name,
                "tasks": kept,
                "estimates": {m: {k: e.as_dict() for k, e in by_metric.items()} for m, by_metric in estimates.items()},
                "improvement": [{"x": x, "y": y, **e.as_dict()} for (x, y), e in probabilities.items()],
            }
        )
    out = Path(out_dir) / FOLDER
    interval_plot(panels["intervals"], out / FIGURES["intervals"])
    profile_plot(panels["profiles"], out / FIGURES["profiles"])
    figures = ["intervals", "profiles"]
    if pairs:
        probability_plot(panels["improvement"], out / FIGURES["improvement"])
        figures.insert(1, "improvement")
    section["figures"] = {kind: f"{FOLDER}/{FIGURES[kind]}" for kind in figures}
    section["notes"] = notes
    return section


def _percent(e: Mapping) -> str:
    return f"{e['point']:.1%}" + (f" [{e['low']:.1%}, {e['high']:.1%}]" if "low" in e else "")


def _probability(e: Mapping | None) -> str:
    if e is None:
        return "-"
    return f"{e['point']:.2f}" + (f" [{e['low']:.2f}, {e['high']:.2f}]" if "low" in e else "")


def aggregate_markdown(section: Mapping) -> str:
    """The section as markdown: one table and three figure links per group, then the notes."""
    runs = ", ".join(f"{m} {n}" for m, n in section["runs"].items())
    lines = [
        "## Aggregate success (rliable)",
        "",
        f"IQM (mean of the middle 50% of all run x task success rates) and mean success, with 95% "
        f"stratified-bootstrap intervals ({section['reps']:,} replicates, seed {section['seed']}). "
        "P(X > Y): the probability that a run of X beats a run of Y on a task of the group, averaged "
        f"over its tasks (0.50: no difference), with its interval. Runs per method: {runs or 'none'}.",
    ]
    for group in section["groups"]:
        baselines = list(dict.fromkeys(p["y"] for p in group["improvement"]))
        probability = {(p["x"], p["y"]): p for p in group["improvement"]}
        rows = [
            [method, *(_percent(by_metric[k]) for k in METRICS)]
            + [_probability(probability.get((method, base))) for base in baselines]
            for method, by_metric in group["estimates"].items()
        ]
        header = ["method", *METRICS, *(f"P(X > {b})" for b in baselines)]
        lines += ["", f"### {group['name']}: {', '.join(group['tasks'])}", "", markdown_table(header, rows)]
    if section.get("figures"):
        names = {"intervals": "IQM and mean", "improvement": "P(X > Y)", "profiles": "performance profiles"}
        links = ", ".join(f"[{names[kind]}]({path})" for kind, path in section["figures"].items())
        lines += ["", f"Figures, one panel per group: {links}."]
    if section.get("notes"):
        lines += ["", *(f"Note: {note}." for note in section["notes"])]
    return "\n".join(lines) + "\n"
