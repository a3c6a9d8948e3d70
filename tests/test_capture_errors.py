"""capture(): bad destinations and sources are refused, and a failed capture leaves nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthrough.capture.run import capture
from passthrough.errors import NotAHostTree, PassthroughError
from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from tests.capture_hosts import scanned, workstation


def _siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_a_non_empty_destination_is_refused_and_left_alone(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    dest = tmp_path / "reports" / "bug"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine\n")

    with pytest.raises(PassthroughError, match=r"is not empty \(1 entry: notes.txt\)") as raised:
        capture(HostTree(source), dest)

    assert raised.value.path == str(dest)
    assert os.listdir(dest) == ["notes.txt"] and (dest / "notes.txt").read_text() == "mine\n"
    assert _siblings(dest) == ["bug"]


def test_a_destination_that_is_a_file_or_has_no_parent_is_refused(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = HostTree(make_tree(workstation()))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PassthroughError, match="exists and is not a directory"):
        capture(source, tmp_path / "a-file")
    with pytest.raises(PassthroughError, match="does not exist"):
        capture(source, tmp_path / "missing" / "capture")
    assert not (tmp_path / "missing").exists()


def test_an_empty_destination_directory_is_filled(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    source = make_tree(workstation())
    dest = tmp_path / "reports" / "empty"
    dest.mkdir(parents=True)

    capture(HostTree(source), dest)

    assert scanned(dest) == scanned(source)
    assert _siblings(dest) == ["empty"]


def test_a_source_that_is_not_a_host_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(NotAHostTree, match="neither sys/ nor proc/cpuinfo"):
        capture(HostTree(tmp_path / "nothing"), tmp_path / "capture")
    assert not (tmp_path / "capture").exists()


def test_a_capture_that_fails_halfway_leaves_no_partial_tree(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passthrough.capture import run as capture_module

    def broken(self: object) -> None:
        raise RuntimeError("disk pulled out")

    source = make_tree(workstation())
    monkeypatch.setattr(capture_module._Recorder, "host_critical_evidence", broken)
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "existing-empty"
    existing.mkdir()

    for dest in (out / "new", existing):
        with pytest.raises(RuntimeError, match="disk pulled out"):
            capture(HostTree(source), dest)

    assert _siblings(existing) == ["existing-empty"]  # no half tree, no staging directory
    assert os.listdir(existing) == []


def test_a_write_error_becomes_a_clear_error_and_leaves_nothing(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passthrough.capture import run as capture_module

    real_write = capture_module._Recorder.write

    def full_disk(self: Any, rel: str, data: bytes) -> None:
        if rel.startswith("etc/"):
            raise OSError(28, "No space left on device")
        real_write(self, rel, data)

    monkeypatch.setattr(capture_module._Recorder, "write", full_disk)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(PassthroughError, match="failed and nothing was written: .*No space left on device"):
        capture(HostTree(make_tree(workstation())), out / "capture")

    assert os.listdir(out) == []
