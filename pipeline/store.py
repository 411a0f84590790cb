"""A results store: every finished run of a comparison as a small, self-describing record meant to be committed.

    <store>/runs/<run>/record.json   what the run was (its key), the code it ran (commit, code version), its
                                     dataset, evaluation summary, logged routing means and diagnostics, and
                                     the references it was evaluated beside (random policy, the data's success)
    <store>/runs/<run>/config.yaml   the run's resolved training configuration (LightningCLI's)
    <store>/runs/<run>/last.ckpt     its last checkpoint, only when asked for and under the size asked for

A record is written file by file, atomically, ``record.json`` last: a run is in the store once its
``record.json`` exists, and then it is complete (``record.json`` holds the size and sha256 of its other
files, checked when it is read). Nothing here knows what a comparison is (``robocds.pipeline.compare`` builds
the records and reads them back); this module owns the folder layout, the file format, the run's *key*
(the fields that must agree for two runs to belong to one study) and the code's identity.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robocds.errors import ConfigError
from robocds.files import atomic_path, write_bytes_atomic, write_text_atomic

RUNS_FOLDER = "runs"
RECORD_FILE = "record.json"  # written last: its presence says the record is complete
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "last.ckpt"
RECORD_FORMAT = 1  # the format of record.json; a reader refuses another
# The sub-packages whose Python sources make the code version (the folders of pyproject's package-dir).
CODE_PACKAGES = ("robocds", "robocds.envs", "robocds.datasets", "robocds.train", "robocds.eval", "robocds.pipeline")
UNKNOWN = "unknown"  # the commit outside a git checkout

# What a difference in each field of a run's key means: another dataset or another run (never mixed), another
# configuration or another version of the code (mixed only when the user says so, ``--allow-mixed``).
KEY_KINDS = {
    "recipe": "recipe", "fingerprint": "recipe", "method": "run", "seed": "run",
    "train_configs": "config", "config_files": "config", "train_args": "config", "episodes": "config",
    "reference_episodes": "config",
    "code": "code",
}  # fmt: skip
MIXABLE = ("config", "code")
_HINTS = {
    "recipe": "a record of another dataset: use another --store, or the recipe the store was made with",
    "run": "the record was moved from another run's folder: put it back, or delete it",
    "config": "use another --store, the study's configuration, or --allow-mixed config to report them together",
    "code": "use the code the store was made with{commit}, another --store, or --allow-mixed code to report them "
    "together",
}


@dataclass(frozen=True)
class CodeIdentity:
    """Which code wrote a record."""

    version: str  # sha256 of the project's Python sources (the same on every machine with the same code)
    commit: str  # git commit of the checkout the code runs from, or "unknown"
    dirty: bool | None  # tracked files differ from the commit (None: unknown)

    def describe(self) -> str:
        """``<commit, 12 digits>[ (dirty)]``, or ``unknown``."""
        if self.commit == UNKNOWN:
            return UNKNOWN
        return self.commit[:12] + (" (dirty)" if self.dirty else "")

    def to_json_dict(self) -> dict[str, Any]:
        return {"version": self.version, "commit": self.commit, "dirty": self.dirty}


def recorded_commit(record: Mapping[str, Any]) -> str:
    """``CodeIdentity.describe`` of the code a record names (for messages)."""
    code = record.get("code")
    return CodeIdentity(**code).describe() if isinstance(code, Mapping) else UNKNOWN


def package_folders() -> list[tuple[str, Path]]:
    """(dotted name, folder) of every sub-package in ``CODE_PACKAGES``, without importing them."""
    out = []
    for name in CODE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out.append((name, Path(next(iter(spec.submodule_search_locations)))))
    return out


def code_version(folders: list[tuple[str, Path]] | None = None) -> str:
    """sha256 over the path and bytes of every ``*.py`` file of ``folders`` (default: the project's packages).

    Data (recipes) and training configs are not in it: records name those separately.
    """
    digest = hashlib.sha256()
    for name, folder in package_folders() if folders is None else folders:
        for path in sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts):
            digest.update(f"{name}/{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_commit(folder: Path | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the git checkout the package in ``folder`` (default: ``robocds``) is tracked in;
    ("unknown", None) when it is not in one (an installed wheel, a copy)."""
    if folder is None:
        folder = package_folders()[0][1]
    if not _git(folder, "ls-files", "--", "__init__.py"):  # in a repository, but not tracked there: not ours
        return UNKNOWN, None
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return UNKNOWN, None
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def current_code() -> CodeIdentity:
    """The identity of the code this process runs."""
    return CodeIdentity(code_version(), *code_commit())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def machine() -> dict[str, str]:
    """Where a record was written (no host name: records are committed)."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "platform": sys.platform,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def compact_json(value: Any, level: int = 0) -> str:
    """JSON with one member per line, but a list of scalars on one line (a record stays short and readable)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(value, Mapping) and value:
        items = [f"{inner}{json.dumps(str(key))}: {compact_json(item, level + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple) and value and any(isinstance(v, Mapping | list | tuple) for v in value):
        return "[\n" + ",\n".join(f"{inner}{compact_json(item, level + 1)}" for item in value) + f"\n{pad}]"
    return json.dumps(value)


def episode_columns(episodes: list[Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    """Per-episode records ``[{"task", field: value}, ...]`` as ``{task: {field: [values]}}`` (a quarter of the
    bytes); ``episode_rows`` turns them back."""
    columns: dict[str, dict[str, list]] = {}
    for episode in episodes:
        task = columns.setdefault(episode["task"], {})
        for key, value in episode.items():
            if key != "task":
                task.setdefault(key, []).append(value)
    return columns


def episode_rows(columns: Mapping[str, Mapping[str, list]]) -> list[dict[str, Any]]:
    """The inverse of ``episode_columns``: the records, task by task."""
    rows = []
    for task, fields in columns.items():
        count = len(next(iter(fields.values()), []))
        rows += [{"task": task, **{key: values[i] for key, values in fields.items()}} for i in range(count)]
    return rows


def key_difference(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[str, str, Any, Any] | None:
    """(field, kind, found, wanted) of the first field of a key that differs (a mapping's differing member is
    named ``field.member``), or None."""
    for field in dict.fromkeys([*wanted, *found]):
        mine, theirs = found.get(field), wanted.get(field)
        if mine == theirs:
            continue
        kind = KEY_KINDS.get(field, "config")
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            member = next(m for m in dict.fromkeys([*theirs, *mine]) if mine.get(m) != theirs.get(m))
            return f"{field}.{member}", kind, mine.get(member), theirs.get(member)
        return field, kind, mine, theirs
    return None


def _short(value: Any) -> str:
    """A value for a one-line message: hex digests cut to 12 digits."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return repr(value[:12] + "...")
    return repr(value)


@dataclass(frozen=True)
class ResultsStore:
    """The records of a study under ``root`` (see the module docstring)."""

    root: Path

    def folder(self, run: str) -> Path:
        if not run or "/" in run or run.startswith("."):
            raise ValueError(f"run={run!r}: must be a folder name")
        return Path(self.root) / RUNS_FOLDER / run

    def record_path(self, run: str) -> Path:
        return self.folder(run) / RECORD_FILE

    def has(self, run: str) -> bool:
        return self.record_path(run).is_file()

    def read(self, run: str) -> dict | None:
        """The record of ``run`` (None if it has none), checked: its format, its run name and its files."""
        path = self.record_path(run)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error}): delete the run's folder to run it again") from None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            found = record.get("format") if isinstance(record, dict) else type(record).__name__
            raise ConfigError(f"{path}: record format {found!r}, this code reads {RECORD_FORMAT}")
        for field in ("run", "key", "code", "dataset", "evaluation", "reference", "files"):
            if field not in record:
                raise ConfigError(f"{path}: missing field {field!r}: delete the run's folder to run it again")
        for part in ("evaluation", "reference"):
            missing = [field for field in ("label", "per_task", "average_success") if field not in record[part]]
            if missing:
                raise ConfigError(f"{path}: {part} misses {missing}: delete the run's folder to run it again")
        if record["run"] != run:
            raise ConfigError(f"{path}: the record of run {record['run']!r} in the folder of {run!r}: {_HINTS['run']}")
        for name, expected in record["files"].items():
            file = path.parent / name
            if not file.is_file() or sha256_file(file) != expected["sha256"]:
                raise ConfigError(
                    f"{file}: {'missing' if not file.is_file() else 'changed'} since the record was written "
                    f"(sha256 {expected['sha256'][:12]}...): restore it, or delete the run's folder to run it again"
                )
        return record

    def write(self, run: str, record: Mapping[str, Any], files: Mapping[str, bytes | Path]) -> Path:
        """Write ``files`` (bytes, or a file to copy), then ``record.json`` with their sizes and digests."""
        folder = self.folder(run)
        listed = {}
        for name, content in files.items():
            target = folder / name
            if isinstance(content, Path):
                with atomic_path(target) as tmp:
                    shutil.copyfile(content, tmp)
            else:
                write_bytes_atomic(target, content)
            listed[name] = {"bytes": target.stat().st_size, "sha256": sha256_file(target)}
        full = {"format": RECORD_FORMAT, "run": run, **record, "files": listed}
        return write_text_atomic(folder / RECORD_FILE, compact_json(full) + "\n")


def check_key(
    path: Path,
    found: Mapping[str, Any],
    wanted: Mapping[str, Any],
    allow: Collection[str] = (),
    against: str = "",
    commit: str = "",
) -> None:
    """Refuse (one line naming the record and the field) a record whose key differs from ``wanted`` in a field
    whose kind is not in ``allow`` (``MIXABLE`` kinds only). ``against``: what ``wanted`` is, for the message;
    ``commit``: the record's (``CodeIdentity.describe``), named when the code differs."""
    differences = dict(found)
    while (difference := key_difference(differences, wanted)) is not None:
        field, kind, mine, theirs = difference
        if kind not in allow or kind not in MIXABLE:
            raise ConfigError(
                f"{path}: recorded with {field} {_short(mine)}, {against or 'this study has'} {_short(theirs)}: "
                + _HINTS[kind].format(commit=f" (commit {commit})" if commit and commit != UNKNOWN else "")
            )
        top = field.split(".")[0]
        differences[top] = wanted.get(top)  # allowed: look further
