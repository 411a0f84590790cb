"""The one error type for bad data: it names where the problem is (shard, sample key, field)."""

from __future__ import annotations

from robocds.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset (shard, sample, manifest or recipe) does not match the schema.

    ``source`` is the file or URL (a shard, ``manifest.json``, a recipe), ``key`` the sample's
    ``__key__`` when known, ``field`` the member suffix or JSON field; the message reads
    ``<source>: sample <key>: field <field>: <problem>``.
    """

    def __init__(self, problem: str, source: str | None = None, key: str | None = None, field: str | None = None):
        self.problem = problem
        self.source = source
        self.key = key
        self.field = field
        parts: list[str] = []
        if source is not None:
            parts.append(str(source))
        if key is not None:
            parts.append(f"sample {key!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(problem)
        super().__init__(": ".join(parts))

    def __reduce__(self):
        # Keeps the structured fields when the error crosses a process boundary (DataLoader workers).
        return (DatasetError, (self.problem, self.source, self.key, self.field))
