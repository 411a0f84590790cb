"""Atomic writes: the file appears complete or not at all, and a failed write leaves nothing behind."""

import pytest

from robocds.files import atomic_path, stale_temps, write_text_atomic


def test_a_write_replaces_the_file_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "report.md"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.name.startswith(".report.md.") and tmp.suffix == ".md"  # writers pick the format by suffix
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(target.parent.iterdir()) == [target]
    write_text_atomic(target, "new", durable=True)
    assert target.read_text() == "new"


def test_stale_temporaries_of_a_name_are_found_and_no_others(tmp_path):
    for name in (".shard-000001.tar.123.tmp.tar", ".shard-000001.tar.99.tmp", ".shard-000002.tar.5.tmp.tar"):
        (tmp_path / name).write_bytes(b"partial")
    assert [p.name for p in stale_temps(tmp_path, "shard-000001.tar")] == [
        ".shard-000001.tar.123.tmp.tar",
        ".shard-000001.tar.99.tmp",
    ]
