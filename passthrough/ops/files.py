"""Changing configuration files safely: a diff first, a backup beside each file, an undo.

A :class:`PersistencePlan` holds each file's text before and after and the commands that
make the change take effect (``update-initramfs -u -k all``, ``update-grub``). It writes
nothing; its ``fingerprint`` lets the apply job refuse when a file changed since the user
read the diff. :func:`apply_plan` backs every existing file up as
``<file>.<UTC timestamp>.bak`` (udev, modprobe and GRUB read none of those names), writes
the new text atomically, runs the commands, and on any failure restores every file. Its
undo record says which backups to restore and which directories the apply created below
one that was there (never /etc or another top-level directory); :func:`undo_record`
refuses paths outside the files persistence manages, removes a created directory only
while it is empty, and never takes commands from the record.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from passthrough.host import HostTree
from passthrough.ops.commands import CommandResult, RunCommand
from passthrough.ops.errors import FileChangedSinceApply, InvalidRequest, OperationFailed, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.result import SUCCEEDED, UNCHANGED, OperationResult, Recorder

# The files persistence may write, and so the only ones an undo record may name.
MANAGED_FILES = (
    "etc/udev/rules.d/90-passthrough-wizard-vfio.rules",
    "etc/modprobe.d/passthrough-wizard-vfio.conf",
    "etc/initramfs-tools/modules",
    "etc/dracut.conf.d/*.conf",
    "etc/mkinitcpio.conf",
    "etc/default/grub",
    "etc/default/grub.d/*.cfg",
    "etc/kernel/cmdline",
    "boot/loader/entries/*.conf",
    "boot/efi/loader/entries/*.conf",
    "efi/loader/entries/*.conf",
    "boot/refind_linux.conf",
    "boot/syslinux/*.cfg",
    "boot/syslinux/*.conf",
    "boot/extlinux/*.conf",
    "boot/syslinux.cfg",
    "boot/extlinux.conf",
)
# Directories an apply may have to create but never records, so no undo removes them: the
# top level (/etc on a captured tree that has none) and the EFI system partition's mount point.
KEPT_DIRECTORIES = ("boot/efi",)
_SHELL = set("$\"'`|;&<>(){}*?")


def sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def unified_diff(path: str, before: str | None, after: str | None) -> str:
    """A ``diff -u`` of one file, with ``/dev/null`` for a file created or deleted."""
    old = _lines(before or "")
    new = _lines(after or "")
    relative = path.lstrip("/")
    lines = difflib.unified_diff(
        old,
        new,
        fromfile="/dev/null" if before is None else f"a/{relative}",
        tofile="/dev/null" if after is None else f"b/{relative}",
    )
    return "".join(lines)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


@dataclass
class FileChange:
    path: str  # relative to the root: "etc/modprobe.d/passthrough-wizard-vfio.conf"
    before: str | None  # None: the file does not exist
    after: str | None  # None: the file is deleted

    @property
    def diff(self) -> str:
        return unified_diff(self.path, self.before, self.after)

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.path, "before": self.before, "after": self.after, "diff": self.diff}


@dataclass
class PersistencePlan:
    action: str
    targets: list[str]
    changes: list[FileChange] = field(default_factory=list)  # only files whose text changes
    commands: list[str] = field(default_factory=list)  # run after the writes, in order
    notes: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        return "".join(change.diff for change in self.changes)

    @property
    def fingerprint(self) -> str:
        """Identifies what the plan was made from and what it writes."""
        digest = hashlib.sha256()
        for change in self.changes:
            digest.update(f"{change.path}\0{sha256(change.before)}\0{sha256(change.after)}\0".encode())
        return digest.hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "targets": self.targets,
            "changes": [change.to_json() for change in self.changes],
            "commands": self.commands,
            "notes": self.notes,
            "diff": self.diff,
            "fingerprint": self.fingerprint,
        }


def change(path: str, before: str | None, after: str | None) -> FileChange | None:
    """A FileChange, or None when the text stays the same."""
    return None if before == after else FileChange(path.lstrip("/"), before, after)


def read_text(tree: HostTree, relative: str) -> str | None:
    """A file's exact text (HostTree.read strips it; a diff must keep every character)."""
    try:
        with open(tree.path(relative), encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def command_argv(command: str) -> list[str]:
    """``update-grub`` -> [update-grub]; anything using the shell runs through ``sh -c``."""
    return ["sh", "-c", command] if set(command) & _SHELL else shlex.split(command)


def is_managed(relative: str) -> bool:
    parts = relative.split("/")
    return (
        ".." not in parts
        and "" not in parts
        and any(fnmatch.fnmatchcase(relative, pattern) for pattern in MANAGED_FILES)
    )


# Applying --------------------------------------------------------------------------------
def _backup_name(tree: HostTree, relative: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name, counter = f"{relative}.{stamp}.bak", 1
    while tree.exists(name):  # two applies within a second
        counter += 1
        name = f"{relative}.{stamp}-{counter}.bak"
    return name


def is_kept_directory(relative: str) -> bool:
    """A directory no apply records and no undo removes: the top level (etc, boot, efi) and mount points."""
    return "/" not in relative or relative in KEPT_DIRECTORIES


def _make_parents(tree: HostTree, relative: str) -> tuple[list[str], list[str]]:
    """Create the missing directories above ``relative``.

    Returns those the undo may take back again (deepest first), and the top-level or system
    directories it had to create too, which stay.
    """
    missing = []
    parent = os.path.dirname(relative)
    while parent and not tree.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        os.mkdir(tree.path(directory), 0o755)
    own = ["/" + directory for directory in missing if not is_kept_directory(directory)]
    kept = ["/" + directory for directory in missing if is_kept_directory(directory)]
    return own, kept


def _write_atomically(tree: HostTree, relative: str, text: str, mode: int | None) -> None:
    path = tree.path(relative)
    temporary = f"{path}.passthrough-wizard.tmp"
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, mode if mode is not None else 0o644)
    os.replace(temporary, path)


def _copy(tree: HostTree, source: str, target: str) -> None:
    with open(tree.path(source), "rb") as handle:
        data = handle.read()
    with open(tree.path(target), "wb") as handle:
        handle.write(data)
    os.chmod(tree.path(target), os.stat(tree.path(source)).st_mode & 0o7777)


def _files_state(tree: HostTree, paths: list[str]) -> dict[str, Any]:
    return {"files": {"/" + path: sha256(read_text(tree, path)) for path in paths}}


def _run(run: RunCommand, recorder: Recorder, commands: list[str], warnings: list[str]) -> None:
    for command in commands:
        with recorder.step("command", command) as step:
            result: CommandResult = run(command_argv(command))
            step.detail = result.summary
            if result.skipped:
                warnings.append(result.summary)
            elif not result.ok:
                raise OperationFailed(result.summary, hint="Fix what the command reports and apply again.")


def apply_plan(
    tree: HostTree,
    plan: PersistencePlan,
    result: OperationResult,
    recorder: Recorder,
    run: RunCommand,
) -> OperationResult:
    """Write ``plan`` (backups first), run its commands, verify; restore every file on failure."""
    paths = [change.path for change in plan.changes]
    result.targets = plan.targets
    result.warnings += plan.notes
    with recorder.step("snapshot", ", ".join("/" + path for path in paths) or "no file changes"):
        result.state_before = _files_state(tree, paths)
    if not plan.changes and not plan.commands:
        result.outcome = UNCHANGED
        result.state_after = result.state_before
        return result
    written: list[dict[str, Any]] = []

    def act() -> None:
        for item in plan.changes:
            exists = read_text(tree, item.path) is not None
            backup = _backup_name(tree, item.path) if exists else None
            if backup:
                with recorder.step("backup", "/" + item.path, f"copy to /{backup}"):
                    _copy(tree, item.path, backup)
            mode = os.stat(tree.path(item.path)).st_mode & 0o7777 if exists else None
            record: dict[str, Any] = {"path": "/" + item.path, "backup": None if backup is None else "/" + backup}
            written.append(record)
            record["created_dirs"], kept = _make_parents(tree, item.path)
            for directory in kept:
                recorder.note("create_dir", directory, "the tree had none, so it was created; it stays after an undo")
            if item.after is None:
                with recorder.step("write", "/" + item.path, "delete"):
                    os.remove(tree.path(item.path))
            else:
                with recorder.step("write", "/" + item.path, f"{len(item.after.splitlines())} lines"):
                    _write_atomically(tree, item.path, item.after, mode)
            record["sha256_after"] = sha256(item.after)
        _run(run, recorder, plan.commands, result.warnings)
        with recorder.step("verify", f"{len(plan.changes)} files"):
            for item in plan.changes:
                if read_text(tree, item.path) != item.after:
                    raise VerificationFailed(f"/{item.path} does not read as written.", path=tree.path(item.path))

    def undo() -> list[Callable[[], None]]:
        return [partial(_restore, tree, recorder, record) for record in reversed(written)]

    carry_out(
        result, act=act, undo=undo, read_state=partial(_files_state, tree, paths), doing=f"Applying {plan.action}"
    )
    if result.outcome == SUCCEEDED and written:
        result.undo = {"action": plan.action, "files": written}
    return result


def _restore(tree: HostTree, recorder: Recorder, record: dict[str, Any]) -> None:
    relative, backup = record["path"].lstrip("/"), record["backup"]
    if backup is None:
        with recorder.step("restore", record["path"], "delete: it did not exist before"):
            if tree.exists(relative):
                os.remove(tree.path(relative))
        _remove_created_dirs(tree, recorder, record.get("created_dirs", []))
        return
    with recorder.step("restore", record["path"], f"from {backup}"):
        mode = os.stat(tree.path(backup.lstrip("/"))).st_mode & 0o7777
        _write_atomically(tree, relative, read_text(tree, backup.lstrip("/")) or "", mode)
        os.remove(tree.path(backup.lstrip("/")))


def _remove_created_dirs(tree: HostTree, recorder: Recorder, directories: list[str]) -> None:
    """Remove the directories the apply created, deepest first, each only while it is empty."""
    for directory in directories:
        relative = directory.lstrip("/")
        if is_kept_directory(relative):
            # An undo record of an earlier version may list /etc: the undo goes on without it.
            recorder.note("keep_dir", directory, "left in place: a top-level or system directory is never removed")
        elif tree.listdir(relative):
            recorder.note("keep_dir", directory, "left in place: it holds files now that the apply did not write")
        elif tree.is_dir(relative):
            with recorder.step("remove_dir", directory, "created by the apply, empty again"):
                os.rmdir(tree.path(relative))


# Undoing ---------------------------------------------------------------------------------
def parse_undo_record(record: Any, action: str) -> list[dict[str, Any]]:
    """The files of an undo record, each checked to be a managed file with a backup beside it."""
    if not isinstance(record, dict) or record.get("action") != action or not isinstance(record.get("files"), list):
        raise InvalidRequest(f"This is not the undo record of {action}.", hint="Use the record its apply job returned.")
    files = []
    for item in record["files"]:
        if not isinstance(item, dict):
            raise InvalidRequest("An undo record's files must be objects.")
        path, backup, digest = item.get("path"), item.get("backup"), item.get("sha256_after")
        if not isinstance(path, str) or not is_managed(path.lstrip("/")):
            raise InvalidRequest(f"{path!r} is not a file persistence manages; the undo record was altered.")
        if backup is not None and (
            not isinstance(backup, str)
            or not backup.startswith(path + ".")
            or not backup.endswith(".bak")
            or "/" in backup[len(path) :]
        ):
            raise InvalidRequest(f"{backup!r} is not a backup beside {path}; the undo record was altered.")
        if digest is not None and not isinstance(digest, str):
            raise InvalidRequest("sha256_after must be text.")
        created = item.get("created_dirs", [])
        if not isinstance(created, list) or not all(_above(directory, path) for directory in created):
            raise InvalidRequest(f"The directories recorded for {path} are not its own; the undo record was altered.")
        files.append({"path": path, "backup": backup, "sha256_after": digest, "created_dirs": created})
    return files


def _above(directory: Any, path: str) -> bool:
    """Whether ``directory`` is written plainly (``/etc/udev``) and is one of the directories holding ``path``."""
    if not isinstance(directory, str) or not directory.startswith("/"):
        return False
    parts = directory[1:].split("/")
    return all(part not in ("", ".", "..") for part in parts) and path.startswith(directory + "/")


def undo_record(
    tree: HostTree,
    files: list[dict[str, Any]],
    commands: list[str],
    result: OperationResult,
    recorder: Recorder,
    run: RunCommand,
    *,
    force: bool = False,
) -> OperationResult:
    """Put each file back from its backup (or delete it, if the apply created it), then run ``commands``."""
    paths = [item["path"].lstrip("/") for item in files]
    with recorder.step("check_files", "undo record") as step:
        for item in files:
            now = sha256(read_text(tree, item["path"].lstrip("/")))
            if now != item["sha256_after"] and not force:
                raise FileChangedSinceApply(
                    f"{item['path']} changed after it was applied; undoing would throw those changes away.",
                    path=tree.path(item["path"].lstrip("/")),
                    hint="Compare it with its backup and merge by hand, or undo with force.",
                )
            if item["backup"] is not None and not tree.is_file(item["backup"].lstrip("/")):
                raise FileChangedSinceApply(
                    f"The backup {item['backup']} is gone, so {item['path']} cannot be put back.",
                    path=tree.path(item["backup"].lstrip("/")),
                )
        step.detail = f"{len(files)} files to put back"
    with recorder.step("snapshot", ", ".join(item["path"] for item in files)):
        result.state_before = _files_state(tree, paths)

    def act() -> None:
        for item in reversed(files):
            _restore(tree, recorder, item)
        _run(run, recorder, commands, result.warnings)

    return carry_out(
        result, act=act, undo=lambda: [], read_state=partial(_files_state, tree, paths), doing="Undoing the change"
    )
