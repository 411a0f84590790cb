"""The report's rliable section on hand-made evaluation summaries: known inputs, known IQM and P(X > Y)."""

import json

import numpy as np
import pytest

from robocds.eval.aggregate_report import aggregate_section, score_matrices
from robocds.eval.report import report

TASKS = ["lift-cube", "lift-cylinder", "place-cube-blue", "place-cylinder-purple"]
GROUPS = {"borrowers": ("lift-cube", "lift-cylinder"), "data_rich": ("place-cube-blue", "place-cylinder-purple")}
# no_sharing: 5 runs x 4 tasks holding 1/20 .. 20/20; the IQM keeps the middle ten (6/20 .. 15/20).
RAMP = np.arange(1, 21).reshape(5, 4) / 20
# cds beats no_sharing on every borrower run pair and ties it on the data-rich tasks; sharing_all is 0.
CDS = np.concatenate([np.full((5, 2), 0.95), RAMP[:, 2:]], axis=1)
ALL = np.zeros((5, 4))


def _write_runs(root, scores: dict[str, np.ndarray]) -> list:
    folders = []
    for method, matrix in scores.items():
        for seed, row in enumerate(matrix):
            folder = root / f"{method}-seed{seed}"
            folder.mkdir(parents=True)
            per_task = {task: {"success_rate": float(rate)} for task, rate in zip(TASKS, row)}
            summary = {"label": method, "tasks": TASKS, "per_task": per_task, "average_success": float(row.mean())}
            (folder / "summary.json").write_text(json.dumps(summary))
            folders.append(folder)
    return folders


def test_the_section_gives_the_known_iqm_and_probabilities_per_group_and_writes_its_figures(tmp_path):
    folders = _write_runs(tmp_path / "runs", {"no_sharing": RAMP, "sharing_all": ALL, "cds": CDS})
    out = tmp_path / "report"
    comparison = report(folders, out, groups=GROUPS, methods=["no_sharing", "sharing_all", "cds"], reps=500)
    section = comparison["aggregate"]
    assert [g["name"] for g in section["groups"]] == ["all tasks", "borrowers", "data_rich"]
    overall, borrowers, rich = section["groups"]
    iqm = overall["estimates"]["no_sharing"]["IQM"]
    assert iqm["point"] == pytest.approx(np.mean(np.arange(6, 16)) / 20)
    assert iqm["low"] < iqm["point"] < iqm["high"]
    assert overall["estimates"]["sharing_all"]["mean"] == {"point": 0.0, "low": 0.0, "high": 0.0}
    assert borrowers["estimates"]["cds"]["IQM"] == pytest.approx({"point": 0.95, "low": 0.95, "high": 0.95})
    poi = {(p["x"], p["y"]): p for p in borrowers["improvement"]}
    assert poi[("cds", "no_sharing")]["point"] == pytest.approx(1.0)
    assert poi[("no_sharing", "sharing_all")]["point"] == pytest.approx(1.0)
    rich_poi = {(p["x"], p["y"]): p for p in rich["improvement"]}
    assert rich_poi[("cds", "no_sharing")]["point"] == pytest.approx(0.5)  # identical runs: no difference
    assert rich_poi[("cds", "no_sharing")]["low"] < 0.5 < rich_poi[("cds", "no_sharing")]["high"]
    assert {(p["x"], p["y"]) for p in overall["improvement"]} == {
        ("sharing_all", "no_sharing"), ("cds", "no_sharing"), ("no_sharing", "sharing_all"), ("cds", "sharing_all")
    }  # fmt: skip
    assert list(section["figures"]) == ["intervals", "improvement", "profiles"]
    for path in section["figures"].values():
        assert (out / path).stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "## Aggregate success (rliable)" in text and "### borrowers: lift-cube, lift-cylinder" in text
    assert "| cds | 95.0% [95.0%, 95.0%] | 95.0% [95.0%, 95.0%] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |" in text
    assert "[performance profiles](aggregate/profiles.png)" in text
    assert json.loads((out / "report.json").read_text())["aggregate"] == section


def test_the_section_is_reproducible_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    scores = {m: rng.integers(0, 51, size=(5, 4)) / 50 for m in ("no_sharing", "sharing_all", "cds")}
    summaries = [json.loads((f / "summary.json").read_text()) for f in _write_runs(tmp_path / "runs", scores)]
    first = aggregate_section(summaries, tmp_path / "a", GROUPS, reps=300, seed=1)
    again = aggregate_section(summaries, tmp_path / "b", GROUPS, reps=300, seed=1)
    other = aggregate_section(summaries, tmp_path / "c", GROUPS, reps=300, seed=2)
    assert first == again and first != other
    assert (
        first["groups"][0]["estimates"]["cds"]["IQM"]["point"] == other["groups"][0]["estimates"]["cds"]["IQM"]["point"]
    )


def test_one_seed_gives_point_estimates_and_a_note_instead_of_intervals(tmp_path):
    folders = _write_runs(tmp_path / "runs", {"no_sharing": RAMP[:1], "cds": CDS[:1]})
    comparison = report(folders, tmp_path / "out", groups=GROUPS, reps=100)
    overall = comparison["aggregate"]["groups"][0]
    assert overall["estimates"]["cds"]["mean"] == {"point": pytest.approx(CDS[0].mean())}  # no bounds
    assert overall["improvement"][0]["point"] == pytest.approx(0.75) and "low" not in overall["improvement"][0]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Note: fewer than 2 runs, so no interval" in text and "no_sharing (1 run), cds (1 run)" in text
    assert "| cds | 57.5% | 56.2% | 0.75 |" in text  # IQM of 0.95, 0.95, 0.15, 0.2: mean of 0.2 and 0.95


def test_tasks_missing_from_a_run_and_methods_without_runs_are_left_out_with_a_note(tmp_path):
    folders = _write_runs(tmp_path / "runs", {"no_sharing": RAMP[:2], "cds": CDS[:2]})
    summary = json.loads((folders[0] / "summary.json").read_text())
    del summary["per_task"]["lift-cube"]
    (folders[0] / "summary.json").write_text(json.dumps(summary))
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    tasks, scores, notes = score_matrices(summaries, ["cds", "uds", "no_sharing"])
    assert tasks == TASKS[1:] and list(scores) == ["cds", "no_sharing"] and scores["cds"].shape == (2, 3)
    assert notes == ["uds: no evaluated runs, left out", "left out (not evaluated in every run): lift-cube"]
    section = aggregate_section(summaries, tmp_path / "out", {"only": ("lift-cube",), **GROUPS}, reps=50)
    assert [g["name"] for g in section["groups"]] == ["all tasks", "borrowers", "data_rich"]
    assert section["groups"][1]["tasks"] == ["lift-cylinder"]
    assert "group only: lift-cube not evaluated in every run; group left out" in section["notes"]
