"""`manage.py vm ...`: the VMs on this host, and giving them devices from a root shell.

``list`` reads every VM (libvirt, Proxmox, plain QEMU with a QMP socket) and the PCI
functions each holds. ``attach``, ``detach``, ``define`` and ``undo`` are the jobs the web
page submits, run here directly through the same runner (no broker, no worker), with the
same validation, audit records and rollback, and the shell user as the actor.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from passthrough.vms import give
from passthrough.vms.model import VmInventory
from webui.hosts.snapshots import this_host
from webui.hosts.trees import vm_connection, worker_tree
from webui.jobs.closing import JobRefused
from webui.jobs.management.commands._device_files import bad_input, parse_address
from webui.jobs.models import VM_ACTIONS, Action, Job, State
from webui.jobs.runner import execute
from webui.jobs.service import create_job


class Command(BaseCommand):
    help = "List the VMs on this host with their passed-through devices; give a VM devices, take them back, undo."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True)
        verbs.add_parser("list", help="every VM on this host and the PCI functions it holds")
        attach = verbs.add_parser("attach", help="give VM the function(s) ADDR and what must go with them")
        detach = verbs.add_parser("detach", help="take the function(s) ADDR back from VM")
        for sub in (attach, detach):
            sub.add_argument("vm", metavar="VM", help="a libvirt domain, a Proxmox VMID, or qemu:<QMP socket path>")
            sub.add_argument("addresses", nargs="+", metavar="ADDR")
            when = sub.add_mutually_exclusive_group()
            when.add_argument("--live", dest="live", action="store_true", default=None, help="the running VM too")
            when.add_argument("--config-only", dest="live", action="store_false", help="the saved config alone")
        attach.add_argument("--confirm", help="the confirmation asked for when host-critical functions are named")
        attach.add_argument("--fingerprint", help="refuse if the VM's config differs from the one this diff came from")
        attach.add_argument(
            "--primary-gpu", action="store_true",
            help="the GPU is the VM's only display (x-vga; the host keeps no console on it; never hot-plugged)",
        )  # fmt: skip
        attach.add_argument(
            "--rom-file", metavar="PATH",
            help="a VBIOS image for the card, in /usr/share/vgabios, /usr/share/kvm (Proxmox), /usr/share/qemu "
            "or /usr/share/seabios",
        )  # fmt: skip
        define = verbs.add_parser("define", help="a new libvirt VM with the function(s) ADDR, from the generated XML")
        define.add_argument("addresses", nargs="+", metavar="ADDR")
        define.add_argument("--name", default="passthrough-vm")
        define.add_argument("--memory", type=int, default=8192, help="MiB (default 8192)")
        define.add_argument("--vcpus", type=int, default=4)
        undo = verbs.add_parser("undo", help="put a VM back as it was before attach, detach or define job JOB")
        undo.add_argument("job", type=int, metavar="JOB")
        undo.add_argument("--force", action="store_true", help="also when the VM's config changed since that job")
        for sub in verbs.choices.values():
            sub.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        if verb == "list":
            self._list(options["format"])
            return
        action, targets, parameters = self._request(verb, options)
        if os.geteuid() != 0 and settings.PASSTHROUGH_KERNEL != "double":
            self.stderr.write("Warning: not running as root; libvirt, qm and QEMU's monitor may refuse the change.")
        try:
            job = create_job(
                host=this_host(),
                action=action,
                targets=targets,
                parameters=parameters,
                actor=f"shell:{getpass.getuser()}",
                state=State.RUNNING,
            )
        except JobRefused as error:
            raise CommandError(error.message, returncode=1) from None
        job = execute(job, worker_tree(), source="shell")
        if options["format"] == "json":
            self.stdout.write(json.dumps({"job": job.summary(), "result": job.result}, indent=2))
        else:
            self._report(job)
        if job.state != State.SUCCEEDED:
            raise SystemExit(1)

    def _request(self, verb: str, options: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
        if verb == "undo":
            return Action.UNDO_CHANGE, [], {"undo_of": self._undoable(options["job"]), "force": options["force"]}
        targets = list(dict.fromkeys(parse_address(text) for text in options["addresses"]))
        if verb == "define":
            if not 0 < options["memory"] <= 65535 or not 0 < options["vcpus"] <= 1024:
                raise bad_input("--memory is MiB from 1 to 65535 and --vcpus from 1 to 1024.")
            parameters = {"name": options["name"], "memory_mib": options["memory"], "vcpus": options["vcpus"]}
            return Action.VM_DEFINE, targets, parameters
        parameters = {"vm": options["vm"], "live": options["live"]}
        if verb == "attach":
            parameters |= {"confirm": options["confirm"], "fingerprint": options["fingerprint"],
                           "primary_gpu": options["primary_gpu"], "rom_file": options["rom_file"]}  # fmt: skip
            return Action.VM_ATTACH, targets, parameters
        return Action.VM_DETACH, targets, parameters

    def _undoable(self, number: int) -> int:
        host = this_host()
        undone = Job.objects.filter(pk=number, host=host).first()
        if undone is None:
            raise bad_input(f"There is no job {number} on {host.name}.")
        if undone.action not in VM_ACTIONS or undone.state != State.SUCCEEDED or not (undone.result or {}).get("undo"):
            raise bad_input(
                f"Job {number} ({undone.get_action_display().lower()}, {undone.state}) left no VM change to undo: "
                "only an attach, detach or define job that succeeded can be undone here."
            )
        return number

    def _report(self, job: Job) -> None:
        for step in job.steps:
            mark = {True: "ok", False: "FAILED", None: "..."}[step.get("ok")]
            self.stdout.write(
                f"  [{mark:>6}] {step['name']:<16} {step.get('target') or '':<14} {step.get('detail', '')}"
            )
        result = job.result or {}
        diff = (result.get("plan") or {}).get("diff")
        if diff:
            self.stdout.write(diff.rstrip("\n"))
        proof = (result.get("parameters") or {}).get("proof")
        if proof:
            self.stdout.write(f"Proof: {json.dumps(proof)}")
        self.stdout.write(f"job {job.pk}: {job.state}: {job.message}")
        if result.get("undo") and job.state == State.SUCCEEDED:
            self.stdout.write(f"To undo: manage.py vm undo {job.pk}")

    def _list(self, form: str) -> None:
        tree = worker_tree()
        vms = give.read_vms(tree, vm_connection(tree))
        if form == "json":
            self.stdout.write(json.dumps(listing(vms), indent=2))
            return
        for source in vms.sources:
            state = "" if source.available else " (not read)"
            self.stdout.write(f"{source.kind}{state}: {source.detail}")
            for vm in source.vms:
                machine = f", {vm.machine}" if vm.machine else ""
                self.stdout.write(f"  {vm.ref:<32} {vm.name:<20} {vm.state}{machine}")
                for device in vm.devices:
                    where = " and ".join(w for w, on in (("config", device.config), ("live", device.live)) if on)
                    guest = f" -> guest {device.guest}" if device.guest else ""
                    self.stdout.write(f"      {device.host}{guest} ({where})")
        if not vms.vms:
            self.stdout.write(
                "No VM found. Create one with virt-manager or `virsh define`, or from the wizard's generated "
                "configuration: manage.py vm define ADDR --name NAME."
            )


def listing(vms: VmInventory) -> dict[str, Any]:
    """The JSON of `vm list`: every source and VM, with the config's fingerprint instead of its text."""
    data = vms.to_json()
    for source in data["sources"]:
        for vm, model in zip(source["vms"], [vm for vm in vms.vms if vm.kind == source["kind"]], strict=True):
            vm.pop("config", None)
            vm["fingerprint"] = model.fingerprint
    return data
