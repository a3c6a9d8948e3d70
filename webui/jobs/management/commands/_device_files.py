"""The verbs of `manage.py device` that change boot files: persist, unpersist, cmdline, undo.

Each becomes the job the web app submits for the same change (the same action and
parameters), run by the same runner. With ``--plan`` a verb becomes a plan_change job
instead: it reads the files, prints the exact diff of each and writes nothing. The plan's
fingerprint, given back with ``--fingerprint``, makes the apply refuse if a file changed
since the plan was read, as the wizard's apply does.

Input that is wrong whatever the host holds (an address, a driver name, a kernel parameter,
a job number) is refused here with a CommandError (exit 2) before a job row exists.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError

from passthrough.boot.cmdline import validate as validate_kernel_parameters
from passthrough.errors import PassthroughError
from passthrough.ops.persist import UNDOABLE
from passthrough.ops.validate import parse_driver_name
from passthrough.pci.address import PciAddress
from webui.hosts.snapshots import this_host
from webui.jobs.models import Action, Job, State

FILE_VERBS = {
    "persist": Action.PERSIST_BINDING,
    "unpersist": Action.UNPERSIST_BINDING,
    "cmdline": Action.SET_KERNEL_CMDLINE,
    "undo": Action.UNDO_CHANGE,
}
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


@dataclass
class JobRequest:
    """The job a verb asks for, before its row exists."""

    action: str
    targets: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.action != Action.PLAN_CHANGE


def bad_input(message: str) -> CommandError:
    return CommandError(message, returncode=2)


def parse_address(text: str) -> str:
    try:
        return str(PciAddress.parse(text))
    except PassthroughError as error:
        raise bad_input(str(error)) from None


def add_file_verbs(verbs: Any) -> None:
    """The subcommands, on the parser's subparsers action."""
    persist = verbs.add_parser("persist", help="bind the IOMMU groups of ADDR... to vfio-pci at every boot")
    persist.add_argument("addresses", nargs="+", metavar="ADDR")
    persist.add_argument(
        "--confirm", help="the confirmation the error asks for when it touches host-critical functions"
    )
    persist.add_argument(
        "--native-driver",
        action="append",
        default=[],
        metavar="ADDR=DRIVER",
        help="the host driver ADDR had before vfio-pci (for its softdep), or 'none'; by default its driver now",
    )
    unpersist = verbs.add_parser("unpersist", help="stop binding ADDR... to vfio-pci at boot")
    unpersist.add_argument("addresses", nargs="+", metavar="ADDR")
    cmdline = verbs.add_parser("cmdline", help="add or remove kernel parameters in the boot loader's files")
    cmdline.add_argument("--add", action="append", default=[], metavar="P", help="name or name=value")
    cmdline.add_argument("--remove", action="append", default=[], metavar="P", help="name or name=value")
    for sub in (persist, unpersist, cmdline):
        sub.add_argument("--plan", action="store_true", help="print the exact diff of every file; write nothing")
        sub.add_argument(
            "--fingerprint", help="apply only if the files are still as the --plan that printed it read them"
        )
    undo = verbs.add_parser("undo", help="put back the files a persist, unpersist or cmdline job changed")
    undo.add_argument("job", type=int, metavar="JOB")
    undo.add_argument("--force", action="store_true", help="also put back a file edited since that job")


def file_request(verb: str, options: dict[str, Any]) -> JobRequest:
    if verb == "undo":
        return _undo_request(options["job"], bool(options["force"]))
    plan, fingerprint = options["plan"], options["fingerprint"]
    if plan and fingerprint:
        raise bad_input("--plan shows a change and --fingerprint applies one: give one of them.")
    if fingerprint is not None and not _FINGERPRINT.fullmatch(fingerprint):
        raise bad_input(f"{fingerprint!r} is not a plan's fingerprint: give the 16 hex digits --plan printed.")
    targets: list[str] = []
    parameters: dict[str, Any] = {}
    if verb == "cmdline":
        parameters = {"add": _kernel_parameters(options["add"], "add"), "remove": []}
        parameters["remove"] = _kernel_parameters(options["remove"], "remove")
        if not parameters["add"] and not parameters["remove"]:
            raise bad_input("Give at least one kernel parameter, with --add P or --remove P.")
    else:
        targets = list(dict.fromkeys(parse_address(text) for text in options["addresses"]))
    if verb == "persist":
        parameters = {"native_drivers": _native_drivers(options["native_driver"]), "confirm": options["confirm"]}
    if plan:
        return JobRequest(Action.PLAN_CHANGE, targets, {"change": FILE_VERBS[verb], **parameters})
    return JobRequest(FILE_VERBS[verb], targets, {**parameters, "fingerprint": fingerprint})


def _kernel_parameters(specs: list[str], what: str) -> list[str]:
    try:
        return validate_kernel_parameters(list(specs), what)
    except PassthroughError as error:
        raise bad_input(str(error)) from None


def _native_drivers(specs: list[str]) -> dict[str, str | None] | None:
    drivers: dict[str, str | None] = {}
    for spec in specs:
        address, equals, driver = spec.partition("=")
        if not equals:
            raise bad_input(f"--native-driver {spec!r}: write it as ADDR=DRIVER, e.g. 0000:01:00.0=nouveau.")
        try:
            drivers[parse_address(address)] = None if driver == "none" else parse_driver_name(driver)
        except PassthroughError as error:
            raise bad_input(f"--native-driver {spec!r}: {error}") from None
    return drivers or None


def _undo_request(number: int, force: bool) -> JobRequest:
    host = this_host()
    undone = Job.objects.filter(pk=number, host=host).first()
    if undone is None:
        raise bad_input(f"There is no job {number} on {host.name}.")
    if undone.action not in UNDOABLE or undone.state != State.SUCCEEDED or not (undone.result or {}).get("undo"):
        raise bad_input(
            f"Job {number} ({undone.get_action_display().lower()}, {undone.state}) left no file change to undo: "
            "only a persist, unpersist or cmdline job that succeeded can be undone."
        )
    earlier = Job.objects.filter(
        host=host, action=Action.UNDO_CHANGE, state=State.SUCCEEDED, parameters__undo_of=number
    ).first()
    if earlier is not None:
        raise bad_input(f"Job {number} was already undone by job {earlier.pk}.")
    return JobRequest(Action.UNDO_CHANGE, [], {"undo_of": number, "force": force})


def file_report(job: Job, options: dict[str, Any]) -> list[str]:
    """What to read after the steps: a plan's diff and how to apply it, or how to undo an apply."""
    result = job.result or {}
    plan = result.get("plan")
    if plan is not None:
        lines = [plan["diff"].rstrip("\n") if plan["diff"] else "No file changes: the files are already as asked."]
        lines += [f"Then runs: {command}" for command in plan["commands"]]
        lines += [f"Note: {note}" for note in plan["notes"]]
        if plan["changes"]:
            lines.append(f"Fingerprint {plan['fingerprint']}. To write exactly this (refused if a file changes first):")
            lines.append("  " + _apply_command(options, plan["fingerprint"]))
        return lines
    if result.get("undo") and job.state == State.SUCCEEDED:
        return [f"To put the files back: manage.py device undo {job.pk}"]
    return []


def _apply_command(options: dict[str, Any], fingerprint: str) -> str:
    verb = options["verb"]
    words = ["manage.py", "device", verb]
    if verb == "cmdline":
        words += [word for spec in options["add"] for word in ("--add", spec)]
        words += [word for spec in options["remove"] for word in ("--remove", spec)]
    else:
        words += list(dict.fromkeys(parse_address(text) for text in options["addresses"]))
    if verb == "persist":
        if options["confirm"]:
            words += ["--confirm", options["confirm"]]
        words += [word for spec in options["native_driver"] for word in ("--native-driver", spec)]
    return shlex.join([*words, "--fingerprint", fingerprint])
