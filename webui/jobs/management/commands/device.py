"""`manage.py device ...`: the privileged operations from a root shell.

bind, restore, reset, test-reset and sriov act on a device now; persist, unpersist and cmdline change
the boot files (each with --plan to read the diff first) and undo puts such a change back
(see _device_files). For recovery when the web app or Redis is down: the command acts
directly on this host (no broker, no worker), through the same code a worker runs, and
writes the same job row and audit records, with the shell user as the actor.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webui.hosts.snapshots import this_host
from webui.hosts.trees import worker_tree
from webui.jobs.closing import JobRefused
from webui.jobs.management.commands._device_files import (
    FILE_VERBS,
    JobRequest,
    add_file_verbs,
    file_report,
    file_request,
    parse_address,
)
from webui.jobs.models import Action, Job, State
from webui.jobs.runner import execute
from webui.jobs.service import create_job

VERBS = {
    "bind": Action.BIND_VFIO,
    "restore": Action.RESTORE_DRIVER,
    "reset": Action.RESET,
    "test-reset": Action.TEST_RESET,
    "sriov": Action.SET_SRIOV_VFS,
}


class Command(BaseCommand):
    help = (
        "Bind a device's IOMMU group to vfio-pci and back, reset it, set its SR-IOV VFs, bind it at every boot, "
        "edit the kernel command line, or undo such a file change, directly (run as root)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True)
        bind = verbs.add_parser("bind", help="bind every endpoint of ADDR's IOMMU group to vfio-pci")
        bind.add_argument("address")
        bind.add_argument("--release-console", action="store_true", help="release the boot GPU from the console first")
        restore = verbs.add_parser("restore", help="give ADDR's group back to its host drivers")
        restore.add_argument("address")
        reset = verbs.add_parser("reset", help="reset ADDR")
        reset.add_argument("address")
        reset.add_argument("--method", help="flr, af_flr, pm, bus, device_specific (default: the kernel's choice)")
        test_reset = verbs.add_parser(
            "test-reset", help="try each reset method ADDR lists (on vfio-pci) and record which bring it back"
        )
        test_reset.add_argument("address")
        sriov = verbs.add_parser("sriov", help="set the number of SR-IOV virtual functions of ADDR")
        sriov.add_argument("address")
        sriov.add_argument("count", type=int)
        for sub in (bind, reset, test_reset, sriov):
            sub.add_argument(
                "--confirm", help="the confirmation the error asks for when it touches host-critical functions"
            )
        add_file_verbs(verbs)
        for sub in verbs.choices.values():
            sub.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        request = file_request(verb, options) if verb in FILE_VERBS else self._device_request(verb, options)
        if request.writes and os.geteuid() != 0 and settings.PASSTHROUGH_KERNEL != "double":
            self.stderr.write("Warning: not running as root; the kernel will refuse the writes (EACCES).")

        job = self._start(request)
        job = execute(job, worker_tree(), source="shell")
        if options["format"] == "json":
            self.stdout.write(json.dumps({"job": job.summary(), "result": job.result}, indent=2))
        else:
            for step in job.steps:
                mark = {True: "ok", False: "FAILED", None: "..."}[step.get("ok")]
                self.stdout.write(
                    f"  [{mark:>6}] {step['name']:<16} {step.get('target') or '':<14} {step.get('detail', '')}"
                )
            for line in file_report(job, options):
                self.stdout.write(line)
            for line in reset_test_report(job):
                self.stdout.write(line)
            self.stdout.write(f"job {job.pk}: {job.state}: {job.message}")
        if job.state != State.SUCCEEDED:
            raise SystemExit(1)

    def _device_request(self, verb: str, options: dict[str, Any]) -> JobRequest:
        address = parse_address(options["address"])
        parameters: dict[str, Any] = {}
        if verb == "bind":
            parameters = {"confirm": options["confirm"], "release_console": options["release_console"]}
        elif verb == "reset":
            parameters = {"method": options["method"], "confirm": options["confirm"]}
        elif verb == "test-reset":
            parameters = {"confirm": options["confirm"]}
        elif verb == "sriov":
            parameters = {"count": options["count"], "confirm": options["confirm"]}
        return JobRequest(VERBS[verb], [address], parameters)

    def _start(self, request: JobRequest) -> Job:
        try:
            return create_job(
                host=this_host(),
                action=request.action,
                targets=request.targets,
                parameters=request.parameters,
                actor=f"shell:{getpass.getuser()}",
                state=State.RUNNING,
            )
        except JobRefused as error:
            raise CommandError(
                f"{error.message} If its worker died, start the worker once so it closes that job.", returncode=1
            ) from None


def reset_test_report(job: Job) -> list[str]:
    """A test-reset job's outcome per method, one line each."""
    if job.action != Action.TEST_RESET or not job.result:
        return []
    tested = (job.result.get("parameters") or {}).get("methods") or []
    return [f"  {item['method']:<16} {item['outcome'].replace('_', ' '):<18} {item['detail']}" for item in tested]
