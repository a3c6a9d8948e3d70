"""Whole libvirt domain configurations: list every domain, define a new one, put one back (undo).

:func:`read` lists every domain, running or not, with what it holds in its saved
configuration and, when it runs, in the running VM. :func:`define_domain` defines a domain
from the generated XML ("new VM from this config"), never over one that exists.
:func:`undo` defines the configuration from before an attach or detach again, or undefines
a domain a define made, only while the configuration still reads as the job left it.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from functools import partial
from typing import Any

from passthrough.host import HostTree
from passthrough.ops.errors import InvalidRequest, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.result import UNCHANGED, OperationResult, Progress, Recorder
from passthrough.vms.domainxml import parse_domain
from passthrough.vms.libvirt import KIND
from passthrough.vms.libvirtconn import (
    DEFAULT_URI,
    Handle,
    call,
    connection,
    require_uri,
    state_of,
    unplug,
    version,
    with_secrets,
)
from passthrough.vms.model import (
    ConfigChanged,
    DeviceHeldElsewhere,
    UnknownVm,
    Vm,
    VmError,
    VmSource,
    config_plan,
    fingerprint,
)

MAX_XML = 1 << 20
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NONE_YET = (
    "no domain is defined yet: create one with virt-manager or virt-install, or use 'new VM from this config' "
    "to define one from the generated XML"
)


def read(tree: HostTree, *, uri: str | None = DEFAULT_URI, **_: Any) -> VmSource:
    """Every domain of ``uri``, running or not; never raises for a libvirt that is missing or silent."""
    if uri is None:
        return VmSource(KIND, False, "libvirt is not read on a tree that is not the live host.")
    try:
        with connection(uri, read_only=True) as conn:
            vms = domains(conn)
            detail = f"{uri} (libvirt {version(conn)})"
    except VmError as error:
        return VmSource(KIND, False, " ".join(part for part in (error.message, error.hint) if part))
    return VmSource(KIND, True, detail if vms else f"{detail}: {NONE_YET}", vms)


def domains(conn: Any) -> list[Vm]:
    found = []
    for domain in call("listing the domains", conn.listAllDomains, 0):
        handle = Handle(conn, domain)
        try:
            found.append(handle.vm())
        except UnknownVm:
            continue  # undefined while it was being read
        except VmError as error:
            name = str(domain.name())
            found.append(Vm(KIND, name, name, "unknown", detail=f"could not be read: {error.message}"))
    return sorted(found, key=lambda vm: vm.name)


def define_domain(
    tree: HostTree, xml_text: Any, progress: Progress | None = None, *, uri: str | None = DEFAULT_URI, **_: Any
) -> OperationResult:
    """Define a new domain from ``xml_text`` (the generated libvirt XML); refuse a name or UUID that exists."""
    result = OperationResult("vm_define", parameters={})
    recorder = Recorder(result, progress)
    with ExitStack() as stack:
        with recorder.step("validate", "domain XML") as step:
            conn = stack.enter_context(connection(require_uri(uri)))
            if not isinstance(xml_text, str) or not xml_text.strip() or len(xml_text) > MAX_XML:
                raise InvalidRequest(f"Give the domain XML as text of at most {MAX_XML} bytes.")
            wanted = parse_domain(xml_text)
            if not wanted.name:
                raise VmError("The domain XML has no <name>, so libvirt cannot define it.")
            ref = f"{KIND}:{wanted.name}"
            existing = {vm.name: vm for vm in domains(conn)}
            if wanted.name in existing:
                raise VmError(f"A libvirt domain called {wanted.name!r} already exists ({existing[wanted.name].state}); "
                              "defining this XML would replace its configuration.",
                              hint="Give the new VM another name.")  # fmt: skip
            if wanted.uuid and _uuid_owner(conn, wanted.uuid):
                raise VmError(f"The UUID {wanted.uuid} already belongs to {_uuid_owner(conn, wanted.uuid)}.",
                              hint="Leave <uuid> out: libvirt makes a new one.")  # fmt: skip
            for held in wanted.hostdevs:
                for vm in existing.values():
                    if vm.holds(held.host):
                        raise DeviceHeldElsewhere(f"{held.host} already belongs to {vm.ref} ({vm.state}).",
                                                  hint=f"Detach it from {vm.name} first: two VMs cannot own one "
                                                  "function.")  # fmt: skip
            step.detail = f"{wanted.name} ({wanted.machine}): " + (
                ", ".join(held.host for held in wanted.hostdevs) or "no host device"
            )
        result.targets = [ref]
        result.parameters = {"vm": ref, "name": wanted.name, "devices": [held.host for held in wanted.hostdevs]}
        read_state = partial(_defined, conn, wanted.name, ref)
        result.state_before = read_state()
        proof: dict[str, Any] = {}

        def act() -> None:
            with recorder.step("define", ref, "defineXML"):
                call(f"defining {ref}", conn.defineXML, xml_text)
            with recorder.step("verify", ref) as verified:
                saved = parse_domain(Handle.find(conn, name=wanted.name).inactive())
                missing = [held.host for held in wanted.hostdevs if saved.hostdev(held.host) is None]
                if missing:
                    raise VerificationFailed(f"The defined {ref} does not list {', '.join(missing)}.")
                proof["config"] = [{"host": h.host, "guest": saved.hostdev(h.host).guest} for h in wanted.hostdevs]  # type: ignore[union-attr]
                verified.detail = f"dumpxml --inactive lists {len(proof['config'])} hostdev(s)"

        def undo_steps() -> list[Any]:
            return [partial(_undefine, conn, recorder, wanted.name, ref)]

        carry_out(result, act=act, undo=undo_steps, read_state=read_state, doing=f"Defining {ref}")
        if result.ok:
            handle = Handle.find(conn, name=wanted.name)
            after = handle.inactive()
            uuid = str(handle.call("reading the UUID", handle.domain.UUIDString))
            result.parameters["proof"] = proof
            result.plan = config_plan(ref, "", after, "define")
            result.undo = {"action": "vm_define", "kind": KIND, "vm": ref, "uuid": uuid, "after": after,
                           "fingerprint": fingerprint(after)}  # fmt: skip
    return result


def undo(
    tree: HostTree, record: Any, *, force: bool = False, progress: Progress | None = None,
    uri: str | None = DEFAULT_URI, **_: Any,
) -> OperationResult:  # fmt: skip
    """Put back the configuration from before an attach or detach, or undefine what a define made.

    Only while the domain's configuration still reads as the job left it ("after"); with
    ``force``, whatever changed since is replaced too."""
    action = record.get("action") if isinstance(record, dict) else None
    shown = {key: record.get(key) for key in ("action", "kind", "vm", "uuid", "fingerprint")} if action else {}
    result = OperationResult(f"undo_{action}", parameters={"record": shown, "force": force})
    recorder = Recorder(result, progress)
    with ExitStack() as stack:
        with recorder.step("validate", "undo record") as step:
            conn = stack.enter_context(connection(require_uri(uri)))
            ref, uuid, before, after = _parse_record(record)
            if not isinstance(force, bool):
                raise InvalidRequest("force must be true or false.")
            handle = Handle.find(conn, uuid=uuid)
            now = handle.vm()
            current = str(now.config)
            if fingerprint(current) not in (fingerprint(after), fingerprint(before)) and not force:
                raise ConfigChanged(
                    f"{now.ref}'s configuration changed after the {str(action)[3:]}; undoing it now would act on a "
                    "configuration nobody has seen.",
                    hint="Look at it (virsh dumpxml --inactive), or undo with force to put back the one from before.",
                )
            if action == "vm_define" and now.running:
                raise VmError(f"{now.ref} is {now.state}; a running domain is not undefined.",
                              hint=f"Shut it down first (virsh shutdown {now.name}).")  # fmt: skip
            step.detail = f"{now.ref}: " + ("undefine" if before is None else "define the configuration from before")
        result.targets = [now.ref]
        with recorder.step("snapshot", now.ref):
            secure = handle.secure()
            result.state_before = state_of(now)
        if before is None:
            read_state = partial(_defined, conn, now.name, now.ref)
            result.state_before = read_state()
            return carry_out(result, act=partial(_undefine, conn, recorder, now.name, now.ref),
                             undo=lambda: [partial(_redefine, handle, recorder, current, secure)],
                             read_state=read_state, doing=f"Undefining {now.ref}")  # fmt: skip
        if current == before:
            result.outcome = UNCHANGED
            result.state_after = result.state_before
            return result
        restore = with_secrets(current, secure, before)
        if restore is None:
            restore = before
            result.warnings.append(
                f"{now.ref}'s secrets (graphics passwords) could not be carried over; set them again."
            )

        def act() -> None:
            with recorder.step("define", now.ref, "defineXML of the configuration from before"):
                handle.define(str(restore), f"putting {now.ref}'s configuration back")
            with recorder.step("verify", now.ref) as verified:
                if handle.inactive() != before:
                    raise VerificationFailed(f"After the undo, {now.ref}'s configuration is not the one from before.")
                verified.detail = "dumpxml --inactive is the configuration from before, line for line"
            for plugged in record.get("hotplugged") or []:
                if isinstance(plugged, dict) and isinstance(plugged.get("host"), str):
                    with recorder.step("unplug", plugged["host"], "detachDeviceFlags LIVE"):
                        unplug(handle, plugged["host"])

        carry_out(result, act=act, undo=lambda: [partial(_redefine, handle, recorder, current, secure)],
                  read_state=partial(_state, handle), doing=f"Undoing the {str(action)[3:]} on {now.ref}")  # fmt: skip
        if result.ok:
            result.plan = config_plan(now.ref, current, handle.inactive(), "undo")
    return result


def _parse_record(record: Any) -> tuple[str, str, str | None, str]:
    if not isinstance(record, dict) or record.get("kind") != KIND or record.get("action") not in (
        "vm_attach", "vm_detach", "vm_define",
    ):  # fmt: skip
        raise InvalidRequest("This is not the undo record of a libvirt domain change.",
                             hint="Use the record its job returned.")  # fmt: skip
    ref, uuid, before, after = (record.get(key) for key in ("vm", "uuid", "before", "after"))
    if not isinstance(ref, str) or not ref.startswith(f"{KIND}:"):
        raise InvalidRequest(f"The undo record names no libvirt domain ({ref!r}).")
    if not isinstance(uuid, str) or not _UUID.match(uuid):
        raise InvalidRequest(f"The undo record has no domain UUID ({uuid!r}).")
    if not isinstance(after, str) or fingerprint(after) != record.get("fingerprint"):
        raise InvalidRequest("The undo record's configuration does not match its fingerprint.")
    if record["action"] != "vm_define":
        if not isinstance(before, str):
            raise InvalidRequest("The undo record has no configuration from before.")
        parse_domain(before)
    return ref, uuid, before if record["action"] != "vm_define" else None, after


def _uuid_owner(conn: Any, uuid: str) -> str | None:
    try:
        return f"{KIND}:{Handle.find(conn, uuid=uuid).name}"
    except UnknownVm:
        return None


def _state(handle: Handle) -> dict[str, Any]:
    return state_of(handle.vm())


def _defined(conn: Any, name: str, ref: str) -> dict[str, Any]:
    try:
        return {"defined": True, **state_of(Handle.find(conn, name=name).vm())}
    except UnknownVm:
        return {"vm": ref, "defined": False}


def _undefine(conn: Any, recorder: Recorder, name: str, ref: str) -> None:
    try:
        handle = Handle.find(conn, name=name)
    except UnknownVm:
        return
    with recorder.step("undefine", ref, "undefineFlags KEEP_NVRAM (its UEFI variables file stays)"):
        handle.call(f"undefining {ref}", handle.domain.undefineFlags, handle.lv.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
    with recorder.step("verify", ref):
        if _defined(conn, name, ref)["defined"]:
            raise VerificationFailed(f"{ref} is still defined after undefineFlags.")


def _redefine(handle: Handle, recorder: Recorder, current: str, secure: str) -> None:
    with recorder.step("rollback", handle.ref, "defineXML of the configuration before the undo"):
        handle.define(secure, f"putting {handle.ref}'s configuration back")
        if handle.inactive() != current:
            raise VerificationFailed(f"{handle.ref}'s configuration did not come back as it was.")
