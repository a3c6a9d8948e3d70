"""Binding at boot creates the directories its files need, and its undo takes back only those.

A captured tree (the demo's) may have no /etc at all; a real host may lack /etc/udev/rules.d
or /etc/modprobe.d. The undo removes what the apply created below a directory that was
there, once empty, and never a top-level directory such as /etc, even when an undo record
of an older version lists it.
"""

from __future__ import annotations

import os

import pytest

from passthrough.kerneldouble import KernelDouble
from passthrough.ops import SUCCEEDED, InvalidRequest
from passthrough.ops.persist import MODPROBE_FILE, RULES_FILE, apply_persist_binding, undo_change
from tests.kernelhosts import GTX1080TI, tree_digest, x570
from tests.test_ops_persist import debian_files

GPU = GTX1080TI.address


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, str | None]:
    return {key: after.get(key) for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def test_undo_on_a_host_without_the_udev_and_modprobe_directories_leaves_the_tree_as_it_was(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files())))
    assert not os.path.exists(f"{kernel.root}/etc/udev") and not os.path.exists(f"{kernel.root}/etc/modprobe.d")
    before = tree_digest(kernel.root)

    applied = apply_persist_binding(kernel, [GPU])
    created = {item["path"]: item["created_dirs"] for item in applied.undo["files"]}
    undone = undo_change(kernel, applied.undo)

    assert applied.outcome == SUCCEEDED, applied.error
    assert created["/" + RULES_FILE] == ["/etc/udev/rules.d", "/etc/udev"]
    assert created["/" + MODPROBE_FILE] == ["/etc/modprobe.d"]
    assert undone.outcome == SUCCEEDED, undone.error
    assert tree_digest(kernel.root) == before


def test_a_tree_without_etc_gets_an_etc_that_is_never_recorded_and_the_undo_succeeds(make_tree):
    kernel = KernelDouble(make_tree(x570()))  # laid out like the demo's captured machines: no /etc
    before = tree_digest(kernel.root)

    applied = apply_persist_binding(kernel, [GPU])
    recorded = [directory for item in applied.undo["files"] for directory in item["created_dirs"]]
    undone = undo_change(kernel, applied.undo)

    assert applied.outcome == SUCCEEDED, applied.error
    assert "/etc" not in recorded
    assert any(step.target == "/etc" and "stays" in step.detail for step in applied.steps)
    assert undone.outcome == SUCCEEDED, undone.error
    assert changed(before, tree_digest(kernel.root)) == {"etc": "dir"}  # only the empty /etc it had to create
    assert os.listdir(f"{kernel.root}/etc") == []


def test_an_undo_record_of_the_old_version_listing_etc_still_undoes_and_keeps_etc(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    before = tree_digest(kernel.root)
    applied = apply_persist_binding(kernel, [GPU])
    # What the previous version recorded for the rules file on a tree without /etc.
    old = {
        **applied.undo,
        "files": [
            {**item, "created_dirs": [*item["created_dirs"], "/etc"]} if item["path"] == "/" + RULES_FILE else item
            for item in applied.undo["files"]
        ],
    }

    undone = undo_change(kernel, old)

    assert undone.outcome == SUCCEEDED, undone.error
    kept = [step for step in undone.steps if step.target == "/etc"]
    assert kept and "never removed" in kept[0].detail
    assert changed(before, tree_digest(kernel.root)) == {"etc": "dir"}


def test_an_undo_leaves_a_directory_it_created_when_something_else_was_put_in_it(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files())))
    applied = apply_persist_binding(kernel, [GPU])
    with open(f"{kernel.root}/etc/modprobe.d/nvidia.conf", "w") as handle:
        handle.write("options nvidia-drm modeset=1\n")

    undone = undo_change(kernel, applied.undo)

    assert undone.outcome == SUCCEEDED, undone.error
    assert os.listdir(f"{kernel.root}/etc/modprobe.d") == ["nvidia.conf"]
    assert not os.path.exists(f"{kernel.root}/etc/udev")
    assert any(step.target == "/etc/modprobe.d" and "holds" in step.detail for step in undone.steps)


def test_a_recorded_directory_that_does_not_hold_the_file_is_still_refused(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files())))
    applied = apply_persist_binding(kernel, [GPU])
    digest = tree_digest(kernel.root)
    for directories in (["/boot"], ["/etc/udev/rules.d/.."], ["etc/udev"], ["/etc/udev/"], [7]):
        files = [{**item, "created_dirs": directories} for item in applied.undo["files"]]
        with pytest.raises(InvalidRequest, match="not its own"):
            undo_change(kernel, {**applied.undo, "files": files})
    assert tree_digest(kernel.root) == digest
