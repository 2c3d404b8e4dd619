"""core.atomic: a reader sees the old file or the new one, never half of one, and no temporary file is left."""
from __future__ import annotations

import json

import pytest

from core import atomic


def test_write_json_replaces_and_leaves_no_temporary_files(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"x": 1})
    atomic.write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    atomic.write_bytes(tmp_path / "b.bin", b"old")
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "b.bin", {"not json": object()})
    assert (tmp_path / "b.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_replacing_streams_any_writer(tmp_path):
    with atomic.replacing(tmp_path / "c.txt") as handle:
        handle.write("line\n")
        assert not (tmp_path / "c.txt").exists()  # nothing visible until the rename
    assert (tmp_path / "c.txt").read_text() == "line\n"
