"""Atomic writes keep the previous file when writing fails; seed streams are stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmer.io import atomic_path, read_json, write_json
from robustmer.seeding import derive_seed


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_seed_streams_are_stable_and_distinct() -> None:
    assert derive_seed(1, "train", "m", 0) == derive_seed(1, "train", "m", 0)
    assert derive_seed(1, "train", "m", 0) != derive_seed(1, "train", "m", 1)
    assert derive_seed(1, "a") != derive_seed(2, "a")
    assert 0 <= derive_seed(123, "x") < 2**32


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "perm.json"
    write_json(target, {})
    assert target.stat().st_mode & 0o644 == 0o644
