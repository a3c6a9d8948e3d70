"""libvirt domains through the daemon: read them, give them devices, take them back (the backend contract).

An attach validates (:func:`passthrough.vms.validate.prepare`), then adds each hostdev
(on a free root port, or a new one when none is free: :mod:`passthrough.vms.rootports`)
to the saved configuration with ``attachDeviceFlags(..., VIR_DOMAIN_AFFECT_CONFIG)``, so
libvirt's own checks speak ("device is already in the domain configuration"), and reads
the configuration back to verify. A running domain also gets each single-function device
hot-plugged (``VIR_DOMAIN_AFFECT_LIVE``) on a free root port, proven by the live XML and
QMP ``query-pci``; what cannot be hot-plugged is said in words
(:func:`passthrough.vms.libvirt.live_placements`). A detach takes the hostdevs out, and
the root ports their attach added once nothing else sits on them. Any failure defines the
configuration from before again and unplugs what was plugged. The configuration before
and after is kept for :func:`undo`; :func:`define_domain` defines a new domain.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from typing import Any

from passthrough.host import HostTree
from passthrough.ops.errors import InvalidRequest, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.result import UNCHANGED, OperationResult, Progress, Recorder
from passthrough.vms.domainxml import Hostdev, device_xml, insert_devices, parse_domain
from passthrough.vms.libvirt import (
    KIND,
    AttachPlan,
    detach_plan,
    find_in_query_pci,
    live_placements,
    new_elements,
    slot_mates,
)
from passthrough.vms.libvirtconfig import define_domain, read, undo
from passthrough.vms.libvirtconn import (
    DEFAULT_URI,
    Handle,
    connection,
    match_xml,
    require_uri,
    state_of,
    unplug,
    wait_for,
)
from passthrough.vms.model import ConfigChanged, VmError, VmInventory, config_plan
from passthrough.vms.model import fingerprint as config_fingerprint
from passthrough.vms.rootports import live_buses
from passthrough.vms.validate import parse_addresses, parse_live, prepare, require_vm

__all__ = ["read", "attach", "detach", "undo", "define_domain", "DEFAULT_URI"]
PROOF_TIMEOUT = 10.0  # seconds for query-pci to show a hot-plugged device


def _require_libvirt(vm_kind: str, ref: str) -> None:
    if vm_kind != KIND:
        raise InvalidRequest(f"{ref} is a {vm_kind} VM; this backend changes libvirt domains only.")


def attach(
    tree: HostTree, vms: VmInventory, reference: str, addresses: list[str], *, live: bool | None = None,
    confirm: str | None = None, fingerprint: str | None = None, progress: Progress | None = None,
    primary_gpu: bool = False, rom_file: str | None = None, uri: str | None = DEFAULT_URI, **_: Any,
) -> OperationResult:  # fmt: skip
    """Give a domain the functions (and what must move with them): saved config, and live where it can."""
    result = OperationResult("vm_attach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with ExitStack() as stack:
        with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
            conn = stack.enter_context(connection(require_uri(uri)))
            wanted_live = parse_live(live)
            prepared = prepare(tree, vms, reference, addresses, confirm=confirm, fingerprint=fingerprint,
                               primary_gpu=primary_gpu, rom_file=rom_file)  # fmt: skip
            _require_libvirt(prepared.vm.kind, prepared.vm.ref)
            handle = Handle.find(conn, name=prepared.vm.id)
            now = handle.vm()
            if fingerprint is not None and fingerprint != now.fingerprint:
                raise ConfigChanged(f"{now.ref}'s configuration changed since the diff was made from it; nothing "
                                    "was changed.", hint="Look at the new diff and attach again.")  # fmt: skip
            wanted = prepared.addresses
            has = [address for address in wanted if (held := now.holds(address)) is not None and held.config]
            if has and len(has) < len(wanted):
                raise VmError(f"{now.ref} already has {', '.join(has)} of the {len(wanted)} functions that go "
                              f"together here ({', '.join(wanted)}).",
                              hint="Detach those first, then attach the whole device again.")  # fmt: skip
            live_text = handle.live()
            running = parse_domain(live_text) if live_text is not None else None
            plan = AttachPlan() if has else new_elements(
                parse_domain(str(now.config)), prepared.spec, now.ref, running=running is not None,
                live_buses=live_buses(running) if running is not None else frozenset(),
            )  # fmt: skip
            controllers, hostdevs = plan.controllers, plan.hostdevs
            plugs: list[tuple[str, Any]] = []
            refused: list[str] = []
            if wanted_live and not now.running:
                raise VmError(f"{now.ref} is {now.state}, so nothing can be hot-plugged into it.",
                              hint="Attach without live: it gets the devices at its next start.")  # fmt: skip
            if now.running and wanted_live is not False and running is not None:
                plugs, refused = live_placements(running, prepared.spec, plan)
                if wanted_live and refused:
                    raise VmError(f"{now.ref} cannot take all of it live: " + "; ".join(refused) + ".",
                                  hint="Attach without live to give it the devices at its next start.")  # fmt: skip
            step.detail = (
                f"{len(controllers)} new root port(s), {len(hostdevs)} hostdev(s) into the configuration"
                + (f"; {len(plugs)} hot-plug(s)" if plugs else "")
                + (f" ({plan.doing})" if plan.ports else "")
            )
        result.targets = wanted
        result.parameters.update(vm=now.ref, addresses=wanted, confirmed=prepared.confirmed)
        if not now.running:
            result.warnings.append(f"{now.ref} is {now.state}: it gets the devices when it next starts.")
        elif wanted_live is False:
            result.warnings.append(f"{now.ref} runs and was asked not to change live: it gets them at its next start.")
        result.warnings += [f"Not hot-plugged: {why}." for why in refused]
        with recorder.step("snapshot", now.ref):
            before, before_secure = handle.inactive(), handle.secure()
            if before != now.config:
                raise ConfigChanged(f"{now.ref}'s configuration changed while the attach was planned; nothing was "
                                    "changed.", hint="Attach again.")  # fmt: skip
            result.state_before = state_of(now)
        if not hostdevs and not plugs:
            result.outcome = UNCHANGED
            result.state_after = result.state_before
            result.warnings.append(f"{now.ref} already has {', '.join(wanted)} in its configuration.")
            return result
        plugged: list[str] = []
        proof: dict[str, Any] = {}

        def act() -> None:
            for element in [*controllers, *hostdevs]:
                what = _describe(element)
                with recorder.step("attach_config", now.ref, what):
                    handle.attach(device_xml(element), handle.lv.VIR_DOMAIN_AFFECT_CONFIG,
                                  f"adding {what} to {now.ref}'s configuration")  # fmt: skip
            with recorder.step("verify", now.ref) as verified:
                proof["config"] = _listed(handle, now.ref, wanted)
                verified.detail = "dumpxml --inactive lists " + ", ".join(
                    f"{d['host']} at {d['guest']}" for d in proof["config"]
                )
            for address, element in plugs:
                with recorder.step("hotplug", address, f"attachDeviceFlags LIVE: {_describe(element)}"):
                    handle.attach(device_xml(element), handle.lv.VIR_DOMAIN_AFFECT_LIVE,
                                  f"hot-plugging {address} into {now.ref}")  # fmt: skip
                    plugged.append(address)
            if plugged:
                with recorder.step("prove", now.ref) as proved:
                    proof["live"] = [_prove_live(handle, address) for address in plugged]
                    proved.detail = "; ".join(f"{p['host']}: live XML {p['guest']} ({p['alias']}), query-pci bus "
                                              f"{p['query_pci']['bus']} slot {p['query_pci']['slot']}" for p in proof["live"])  # fmt: skip

        def undo_steps() -> list[Any]:
            steps: list[Any] = [partial(_unplug, handle, recorder, address) for address in reversed(plugged)]
            return steps + [partial(_put_back, handle, recorder, before, before_secure)]

        read_state = partial(_read_state, handle)
        carry_out(result, act=act, undo=undo_steps, read_state=read_state, doing=f"Attaching to {now.ref}")
        ports = [port.to_json() for port in plan.ports]
        if not result.ok:
            result.plan = config_plan(now.ref, before, insert_devices(before, controllers, hostdevs), plan.doing)
            result.plan["root_ports"] = ports
        else:
            after = handle.inactive()
            result.parameters["proof"] = proof
            result.plan = {**config_plan(now.ref, before, after, plan.doing), "root_ports": ports}
            result.undo = {"action": "vm_attach", "kind": KIND, "vm": now.ref, "uuid": _uuid(handle), "before": before,
                           "after": after, "fingerprint": config_fingerprint(after), "root_ports": ports,
                           "hotplugged": [{"host": p["host"], "alias": p["alias"]} for p in proof.get("live", [])]}  # fmt: skip
    return result


def detach(
    tree: HostTree, vms: VmInventory, reference: str, addresses: list[str], *, live: bool | None = None,
    progress: Progress | None = None, uri: str | None = DEFAULT_URI, **_: Any,
) -> OperationResult:  # fmt: skip
    """Take functions out of a domain's configuration (and out of it live when it runs and can let them go)."""
    result = OperationResult("vm_detach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with ExitStack() as stack:
        with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
            conn = stack.enter_context(connection(require_uri(uri)))
            picked = parse_addresses(addresses)
            wanted_live = parse_live(live)
            vm = require_vm(vms, reference)
            _require_libvirt(vm.kind, vm.ref)
            handle = Handle.find(conn, name=vm.id)
            now = handle.vm()
            missing = [address for address in picked if now.holds(address) is None]
            if missing:
                has = ", ".join(f"{d.host}" for d in now.devices) or "no host PCI function"
                raise VmError(f"{now.ref} does not have {', '.join(missing)}: it holds {has}.",
                              hint="`manage.py vm list` shows which VM holds what.")  # fmt: skip
            saved = parse_domain(str(now.config))
            running = parse_domain(live_text) if (live_text := handle.live()) is not None else None
            everything = slot_mates(saved, picked)
            if running is not None:
                everything = slot_mates(running, everything)
            for address in everything:
                held = saved.hostdev(address) or (running.hostdev(address) if running else None)
                if held is not None and held.interface:
                    raise VmError(f"{now.ref} holds {address} as a network interface (<interface type='hostdev'>), "
                                  "which is taken out as an interface.",
                                  hint=f"virsh detach-interface {now.id} hostdev --config --live")  # fmt: skip
            from_config = [a for a in everything if saved.hostdev(a)]
            in_live = [a for a in everything if running is not None and running.hostdev(a)]
            multi = running is not None and len(in_live) > 1
            if wanted_live and (running is None or multi):
                raise VmError(f"{now.ref} cannot let {', '.join(in_live or picked)} go live: "
                              + ("it is not running." if running is None else "libvirt does not hot-unplug a "
                                 "multifunction device; it leaves when the VM stops."),
                              hint="Detach without live: it leaves the configuration now.")  # fmt: skip
            from_live = [] if wanted_live is False or multi else in_live
            along = [a for a in everything if a not in picked]
            if along:
                result.warnings.append(f"{', '.join(along)} leave{'s' if len(along) == 1 else ''} too: "
                                       "they share a guest slot with what was named (one card).")  # fmt: skip
            if in_live and not from_live:
                result.warnings.append(f"{', '.join(in_live)} stay{'s' if len(in_live) == 1 else ''} in the running "
                                       f"VM until it stops ({'multifunction' if multi else 'live not asked'}).")  # fmt: skip
            ports = detach_plan(str(now.config), from_config, live=running, card=everything)
            step.detail = (
                f"from the configuration: {', '.join(from_config) or 'none'}; live: {', '.join(from_live) or 'none'}"
            ) + (f" ({ports.doing})" if ports.ports else "")
        result.targets = everything
        result.parameters.update(vm=now.ref, addresses=everything)
        with recorder.step("snapshot", now.ref):
            before, before_secure = handle.inactive(), handle.secure()
            result.state_before = state_of(now)
        if not from_config and not from_live:
            result.outcome = UNCHANGED
            result.state_after = result.state_before
            return result
        unplugged: list[Hostdev] = []

        def act() -> None:
            for address in from_config:
                with recorder.step("detach_config", address):
                    handle.detach(match_xml(saved.hostdev(address)), handle.lv.VIR_DOMAIN_AFFECT_CONFIG,  # type: ignore[arg-type]
                                  f"removing {address} from {now.ref}'s configuration")  # fmt: skip
            for fate in ports.ports:
                if fate.removed:  # after its hostdevs: libvirt puts back a controller a device still needs
                    with recorder.step("detach_config", f"root port {fate.name}", fate.reason):
                        handle.detach(f"<controller type='pci' index='{fate.index}' model='pcie-root-port'/>",
                                      handle.lv.VIR_DOMAIN_AFFECT_CONFIG,
                                      f"removing the root port {fate.name} from {now.ref}'s configuration")  # fmt: skip
            with recorder.step("verify", now.ref) as verified:
                saved_now = parse_domain(handle.inactive())
                left = [a for a in from_config if saved_now.hostdev(a)]
                left += [f"root port index {index}" for index in ports.removed if saved_now.controller(index)]
                if left:
                    raise VerificationFailed(
                        f"After the detach, {now.ref}'s configuration still lists {', '.join(left)}."
                    )
                verified.detail = f"dumpxml --inactive no longer lists {', '.join(from_config) or 'them'}" + (
                    f" nor root port(s) {', '.join(str(index) for index in ports.removed)}" if ports.removed else ""
                )
            for address in from_live:
                with recorder.step("unplug", address, "detachDeviceFlags LIVE"):
                    unplugged.append(running.hostdev(address))  # type: ignore[arg-type, union-attr]
                    unplug(handle, address)

        def undo_steps() -> list[Any]:
            return [partial(_put_back, handle, recorder, before, before_secure),
                    *(partial(_replug, handle, recorder, held) for held in unplugged)]  # fmt: skip

        carry_out(result, act=act, undo=undo_steps, read_state=partial(_read_state, handle),
                  doing=f"Detaching from {now.ref}")  # fmt: skip
        if result.ok:
            after = handle.inactive()
            result.plan = {**config_plan(now.ref, before, after, ports.doing),
                           "root_ports": [fate.to_json() for fate in ports.ports]}  # fmt: skip
            result.undo = {"action": "vm_detach", "kind": KIND, "vm": now.ref, "uuid": _uuid(handle), "before": before,
                           "after": after, "fingerprint": config_fingerprint(after)}  # fmt: skip
    return result


def _describe(element: Any) -> str:
    if element.tag == "controller":
        alias = element.find("alias")
        return f"pcie-root-port index {element.get('index')}" + (f" ({alias.get('name')})" if alias is not None else "")
    source = element.find("source/address")
    guest = element.find("address")
    return (f"hostdev {source.get('domain')[2:]}:{source.get('bus')[2:]}:{source.get('slot')[2:]}."
            f"{source.get('function')[2:]} at bus {guest.get('bus')} slot {guest.get('slot')} "
            f"function {guest.get('function')}")  # fmt: skip


def _uuid(handle: Handle) -> str:
    return str(handle.call("reading the domain's UUID", handle.domain.UUIDString))


def _read_state(handle: Handle) -> dict[str, Any]:
    return state_of(handle.vm())


def _listed(handle: Handle, ref: str, addresses: list[str]) -> list[dict[str, Any]]:
    saved = parse_domain(handle.inactive())
    missing = [address for address in addresses if saved.hostdev(address) is None]
    if missing:
        raise VerificationFailed(f"After the attach, {ref}'s configuration does not list {', '.join(missing)}.")
    return [{"host": a, "guest": saved.hostdev(a).guest} for a in addresses]  # type: ignore[union-attr]


def _prove_live(handle: Handle, address: str) -> dict[str, Any]:
    """The live XML lists the hostdev, and QMP query-pci shows its alias at that slot behind that root port."""
    running = parse_domain(handle.live() or "")
    held = running.hostdev(address)
    if held is None or held.guest is None or held.alias is None:
        raise VerificationFailed(f"After the hot-plug, the running domain's XML does not list {address} with an alias.")
    bus, slot_function = held.guest.split(":")[1:]
    parent = next((c.alias for c in running.controllers if c.index == int(bus, 16)), None)
    found = wait_for(lambda: find_in_query_pci(handle.query_pci(), str(held.alias)), PROOF_TIMEOUT)
    if not found:
        raise VerificationFailed(f"QMP query-pci does not show {held.alias} ({address}) within {PROOF_TIMEOUT:.0f} s.")
    slot, function = (int(part, 16) for part in slot_function.split("."))
    if (found["slot"], found["function"]) != (slot, function) or (int(bus, 16) and found["parent"] != parent):
        raise VerificationFailed(f"query-pci shows {held.alias} at slot {found['slot']} function {found['function']} "
                                 f"behind {found['parent']}, not where the live XML puts it ({held.guest} on {parent}).")  # fmt: skip
    return {"host": address, "guest": held.guest, "alias": held.alias, "query_pci": found}


def _unplug(handle: Handle, recorder: Recorder, address: str) -> None:
    with recorder.step("rollback", address, "detachDeviceFlags LIVE"):
        unplug(handle, address)


def _replug(handle: Handle, recorder: Recorder, held: Hostdev) -> None:
    if parse_domain(handle.live() or "<domain><devices/></domain>").hostdev(held.host) is not None:
        return  # the guest never let it go
    domain, bus, slot_function = str(held.guest).split(":")
    slot, function = slot_function.split(".")
    xml = match_xml(held).replace("</source>", f"</source><address type='pci' domain='0x{domain}' bus='0x{bus}' "
                                                f"slot='0x{slot}' function='0x{function}'/>")  # fmt: skip
    with recorder.step("rollback", held.host, "attachDeviceFlags LIVE where it was"):
        handle.attach(xml, handle.lv.VIR_DOMAIN_AFFECT_LIVE, f"plugging {held.host} back in")


def _put_back(handle: Handle, recorder: Recorder, before: str, before_secure: str) -> None:
    if handle.inactive() == before:
        return
    with recorder.step("rollback", handle.ref, "defineXML of the configuration from before"):
        handle.define(before_secure, f"putting {handle.ref}'s configuration back")
