"""Documented commands run as written: the data commands of README.md and docs/DATASETS.md, word for word, from
a fresh working folder (relative paths included), on the tiny dataset standing in for every root they name.

The commands run in-process through their console scripts' ``run_cli`` (the same code path, without an
interpreter start each). Training, evaluation and comparison commands are left to their own tests: they take
minutes as written.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from robocds.datasets import export, generate, inspection
from robocds.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/DATASETS.md")
TINY_TASKS = {"lift-cube", "lift-cylinder", "place-cube-blue"}  # what the tiny recipe records
PROGRAMS: dict[str, Callable] = {
    "robocds-generate": generate.main,
    "robocds-inspect": inspection.main,
    "robocds-export": export.main,
}


def documented_commands(program: str) -> list[str]:
    """Every line of a ``bash`` block of the documents that runs ``program``, its trailing comment removed."""
    found: list[str] = []
    for name in DOCUMENTS:
        for block in re.findall(r"```bash\n(.*?)```", (REPO / name).read_text(), re.S):
            for line in block.splitlines():
                command = line.split("#", 1)[0].strip()
                if command.split(" ", 1)[0] == program and command not in found:
                    found.append(command)
    return found


def run_documented(command: str) -> int:
    program, *argv = shlex.split(command)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(PROGRAMS[program], program, argv)
    return exit_info.value.code


def test_the_documented_commands_are_found():
    assert "robocds-generate tiny --root data/tiny" in documented_commands("robocds-generate")
    assert any(c.startswith("robocds-export minari ") for c in documented_commands("robocds-export"))
    assert documented_commands("robocds-inspect")


def test_documented_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_documented("robocds-generate tiny --root data/tiny") == 0
    # The other roots the documents name hold recipes that take minutes: the tiny dataset stands in.
    commands = documented_commands("robocds-inspect") + documented_commands("robocds-export")
    for root in sorted({shlex.split(c)[-1 if c.startswith("robocds-inspect") else 2] for c in commands}):
        if not Path(root).exists():
            shutil.copytree("data/tiny", root)
    has_minari = importlib.util.find_spec("minari") is not None
    ran = []
    for command in commands:
        words = shlex.split(command)
        if words[0] == "robocds-export" and not has_minari:
            continue
        if "--tasks" in words and not set(words[words.index("--tasks") + 1 :]) <= TINY_TASKS:
            continue  # names tasks of a bigger recipe
        assert run_documented(command) == 0, f"{command}: {capsys.readouterr().err}"
        ran.append(command)
    assert "robocds-export minari data/benchmark --out minari_datasets" in ran or not has_minari
    assert (tmp_path / "minari_datasets" / "robocds" / "tiny" / "lift-cube-v0").is_dir() or not has_minari
