"""What a worker registers about its host, read from its tree; and the version it runs, read from .git."""

from __future__ import annotations

from pathlib import Path

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from webui.hosts.registration import REPO, _commit, app_version, host_facts

COMMIT = "3583cb1" + "0" * 33


def test_the_facts_come_from_the_tree(tmp_path):
    nic = FunctionSpec("0000:05:00.0", "8086", "10d3", "020000", driver="e1000e", iommu_group=5)
    spec = HostSpec(functions=[nic], cpu_vendor="AuthenticAMD", iommu="amd", osrelease="6.8.12-4-pve")
    root = write_tree(spec, tmp_path / "h")
    facts = host_facts(HostTree(str(root)))
    assert facts["kernel"] == "6.8.12-4-pve" and facts["cpu_vendor"] == "AuthenticAMD"
    assert facts["iommu_enabled"] is True and "ivhd" in facts["iommu_detail"]
    assert facts["worker_version"] == app_version()


def test_a_tree_without_proc_or_sys_gives_empty_facts_never_guesses(tmp_path):
    (tmp_path / "empty").mkdir()
    facts = host_facts(HostTree(str(tmp_path / "empty")))
    assert (facts["kernel"], facts["cpu_vendor"], facts["iommu_enabled"]) == ("", "", None)


def test_the_commit_is_read_through_a_loose_ref(tmp_path: Path):
    (tmp_path / "refs/heads").mkdir(parents=True)
    (tmp_path / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "refs/heads/main").write_text(COMMIT + "\n")
    assert _commit(tmp_path) == COMMIT


def test_the_commit_is_read_through_packed_refs_and_a_detached_head(tmp_path: Path):
    (tmp_path / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "packed-refs").write_text(
        f"# pack-refs with: peeled\n{'1' * 40} refs/heads/other\n{COMMIT} refs/heads/main\n"
    )
    assert _commit(tmp_path) == COMMIT
    (tmp_path / "HEAD").write_text(COMMIT + "\n")
    assert _commit(tmp_path) == COMMIT


def test_no_checkout_no_commit(tmp_path: Path):
    assert _commit(tmp_path / "missing") is None
    (tmp_path / "HEAD").write_text("ref: refs/heads/gone\n")
    assert _commit(tmp_path) is None


def test_this_checkouts_commit_is_the_one_git_names():
    import subprocess

    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"git cannot read this checkout: {done.stderr.strip()}")
    assert _commit(REPO / ".git") == done.stdout.strip()
    assert app_version().startswith("0.1.0+")
