"""The documented shapes match the code: the shard members and batch keys in docs/DATASETS.md, the README's
observation and action space, against ``robocds.datasets.schema`` and the suite."""

from __future__ import annotations

import re
from pathlib import Path

from robocds.datasets.schema import ARRAY_SPECS, KEY_FRAMES
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import PROPRIO_DIM

DOCS = Path(__file__).resolve().parents[1]


def member_table() -> dict[str, tuple[str, list[str]]]:
    """``{member: (dtype, shape tokens)}`` from the member table of docs/DATASETS.md."""
    rows = re.findall(r"^\| `([\w.]+)` \| (\w+) \| \[([^\]]*)\]", (DOCS / "docs" / "DATASETS.md").read_text(), re.M)
    return {member: (dtype, [token.strip() for token in shape.split(",")]) for member, dtype, shape in rows}


def test_every_shard_member_is_documented_with_the_schema_dtype_and_shape():
    table = member_table()
    for key, spec in ARRAY_SPECS.items():
        assert key in table, f"docs/DATASETS.md does not document {key}"
        dtype, shape = table[key]
        expected = [str(PROPRIO_DIM) if dim == "P" else str(dim) for dim in spec.shape]
        assert (dtype, shape) == (spec.dtype.name, expected), f"{key}: documented {dtype} {shape}"
    assert table[KEY_FRAMES][0] == "uint8"


def test_documented_batch_and_observation_sizes_are_the_suites():
    datasets = (DOCS / "docs" / "DATASETS.md").read_text()
    assert re.findall(r"`proprio`/`next_proprio` float32 \[T, B, (\d+)\]", datasets) == [str(PROPRIO_DIM)]
    readme = (DOCS / "README.md").read_text()
    assert re.findall(r'"proprio": float32 \[(\d+)\]', readme) == [str(PROPRIO_DIM)]
    assert re.findall(r"Actions \(`Discrete\((\d+)\)`\)", readme) == [str(NUM_ACTIONS)]
