import json

import pytest

from robocds.errors import ConfigError
from robocds.eval.report import load_summaries, report


def _fake_run(folder, label, rates):
    folder.mkdir(parents=True)
    per_task = {t: {"success_rate": r} for t, r in rates.items()}
    summary = {"label": label, "tasks": list(rates), "per_task": per_task,
               "average_success": sum(rates.values()) / len(rates)}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_report_merges_seeds_per_method(tmp_path):
    folders = []
    for seed, (a, b) in enumerate([(0.2, 0.4), (0.4, 0.6), (0.6, 0.8)]):
        folders.append(_fake_run(tmp_path / "cds" / f"seed{seed}", "cds", {"lift-cube": a, "place-cube-blue": b}))
    folders.append(_fake_run(tmp_path / "all" / "seed0", "sharing_all", {"lift-cube": 0.1, "place-cube-blue": 0.0}))
    comparison = report(folders, tmp_path / "out")
    cds = comparison["methods"]["cds"]
    assert cds["lift-cube"]["mean"] == pytest.approx(0.4) and cds["lift-cube"]["runs"] == 3
    assert cds["lift-cube"]["high"] - 0.4 == pytest.approx(0.4969, abs=1e-3)
    assert cds["average"]["mean"] == pytest.approx(0.5)
    assert comparison["methods"]["sharing_all"]["average"]["mean"] == pytest.approx(0.05)
    assert comparison["tasks"] == ["lift-cube", "place-cube-blue"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| lift-cube | 40.0% [0.0%, 89.7%] | 10.0% |" in text
    assert (tmp_path / "out" / "success.png").stat().st_size > 1000


def test_a_folder_without_summary_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing-here"):
        load_summaries([tmp_path / "nothing-here"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"label": "x"}')
    with pytest.raises(ValueError, match="missing key 'per_task'"):
        load_summaries([tmp_path / "bad"])


def test_a_single_run_gets_the_binomial_interval_of_its_episodes(tmp_path):
    from robocds.eval.stats import wilson_interval

    folder = tmp_path / "one"
    folder.mkdir()
    per_task = {"lift-cube": {"success_rate": 0.3, "successes": 6, "episodes": 20},
                "lift-block": {"success_rate": 0.0, "successes": 0, "episodes": 20}}  # fmt: skip
    summary = {"label": "cds", "tasks": list(per_task), "per_task": per_task, "average_success": 0.15}
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = report([folder], tmp_path / "out")["methods"]["cds"]
    assert (rows["lift-cube"]["low"], rows["lift-cube"]["high"]) == pytest.approx(wilson_interval(6, 20))
    assert rows["lift-block"]["high"] > 0.1  # 0 of 20 is not a certain 0%: the whisker is not zero-wide
    assert (rows["average"]["low"], rows["average"]["high"]) == pytest.approx(wilson_interval(6, 40))
    assert {cell["interval"] for cell in rows.values()} == {"wilson"}
    assert "| lift-cube | 30.0% |" in (tmp_path / "out" / "report.md").read_text()  # the table keeps its form
