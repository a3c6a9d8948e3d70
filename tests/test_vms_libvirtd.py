"""passthrough.vms.libvirt_uri against a real libvirt_uri: list, attach, detach, refusals, undo, define.

Every test defines TCG q35 domains of its own (tests/libvirtd_support.py) and undefines
them at its end; no other domain is touched. The host functions come from a host tree (a
desktop: a GTX 1080 Ti with its HDMI audio, and an I211 NIC); libvirt accepts any address
into a saved configuration, so they need not exist here. A live attach is only tried where
it cannot reach a real device: on a host without an IOMMU, at an address this host lacks.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from passthrough.configgen import build_spec, generate
from passthrough.host import HostTree
from passthrough.ops.result import ROLLED_BACK, SUCCEEDED, UNCHANGED
from passthrough.pci.scan import scan
from passthrough.vms import libvirt, libvirtd
from passthrough.vms.domainxml import parse_domain
from passthrough.vms.libvirtconn import Handle
from passthrough.vms.model import ConfigChanged, DeviceHeldElsewhere, UnknownVm, VmError, VmInventory
from passthrough.vms.validate import prepare
from tests.configgen_support import desktop
from tests.libvirtd_support import connection_fixture, domains_fixture, libvirt_uri_fixture, wait_until  # noqa: F401

GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:03:00.0"
VIRT_INSTALL_LINUX2020 = Path(__file__).parent / "data/libvirt/virt-install-linux2020.xml"


@pytest.fixture
def tree(make_tree) -> HostTree:
    return HostTree(make_tree(desktop()))


def vms(tree: HostTree, uri: str) -> VmInventory:
    return VmInventory([libvirtd.read(tree, uri=uri)])


def inactive(domain) -> str:
    import libvirt as lv

    return domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)


def test_list_shows_every_domain_with_its_state_machine_and_devices(tree, libvirt_uri, domains):
    off = domains.define("off")
    on = domains.define("on")
    on.create()
    source = libvirtd.read(tree, uri=libvirt_uri)
    assert source.available and source.detail.startswith(f"{libvirt_uri} (libvirt ")
    found = {vm.name: vm for vm in source.vms}
    stopped, running = found[off.name()], found[on.name()]
    assert (stopped.state, stopped.running, stopped.devices, stopped.free_ports) == ("shut off", False, [], None)
    assert stopped.machine.startswith("pc-q35-") and stopped.config == inactive(off)
    # libvirt gives a new q35 domain three root ports; the USB controller and the balloon take two.
    assert (running.state, running.running, running.free_ports, running.hotplug) == ("running", True, 1, None)


def test_a_missing_daemon_or_uri_is_said_not_raised(tree):
    pytest.importorskip("libvirt", reason="libvirt-python is not installed (requirements-libvirt.txt)")
    assert libvirtd.read(tree, uri=None).available is False
    source = libvirtd.read(tree, uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert not source.available and "does not answer" in source.detail and "Start the daemon" in source.detail


def test_attach_puts_the_card_on_the_free_root_port_and_the_next_card_on_a_new_one(tree, libvirt_uri, domains):
    domain = domains.define("attach")
    before = inactive(domain)
    # libvirt gives a new q35 domain three root ports: USB on 1, the balloon on 2, 3 free.
    assert [port.index for port in parse_domain(before).empty_root_ports()] == [3]
    inventory = vms(tree, libvirt_uri)
    vm = inventory.find(domain.name())
    planned = libvirt.plan_attach(vm, prepare(tree, inventory, vm.ref, [GPU]))
    result = libvirtd.attach(tree, inventory, vm.ref, [GPU], uri=libvirt_uri)
    assert result.outcome == SUCCEEDED, result.error
    assert result.targets == [GPU, AUDIO]
    assert [step.name for step in result.steps] == ["validate", "snapshot"] + ["attach_config"] * 2 + ["verify"]
    after = inactive(domain)
    assert result.plan["before"] == before and result.plan["after"] == after
    assert after == planned  # the plan the page shows is what libvirt wrote, line for line
    diff = result.plan["diff"]
    assert diff.splitlines()[0] == f"--- {vm.ref} (before attach: {GPU}, {AUDIO} uses the free root port pci.3)"
    assert "<controller" not in diff
    assert (
        "+      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0' multifunction='on'/>" in diff
    )
    assert "+      <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x1'/>" in diff
    assert not [line for line in diff.splitlines()[2:] if line.startswith("-")]
    assert (
        result.plan["root_ports"]
        == result.undo["root_ports"]
        == [{"index": 3, "name": "pci.3", "added": False, "devices": [GPU, AUDIO]}]
    )
    assert result.parameters["proof"] == {"config": [{"host": GPU, "guest": "0000:03:00.0"},
                                                     {"host": AUDIO, "guest": "0000:03:00.1"}]}  # fmt: skip
    assert (
        result.undo["before"] == before and result.undo["after"] == after and result.undo["uuid"] == domain.UUIDString()
    )
    assert "shut off: it gets the devices when it next starts" in result.warnings[0]
    assert [(d["host"], d["config"], d["live"]) for d in result.state_after["devices"]] == [
        (GPU, True, False),
        (AUDIO, True, False),
    ]
    again = libvirtd.attach(tree, vms(tree, libvirt_uri), vm.ref, [AUDIO], uri=libvirt_uri)
    assert again.outcome == UNCHANGED and inactive(domain) == after

    # No root port is free now: the NIC gets a new one, with the wizard's mark.
    inventory = vms(tree, libvirt_uri)
    planned = libvirt.plan_attach(inventory.find(domain.name()), prepare(tree, inventory, vm.ref, [NIC]))
    nic = libvirtd.attach(tree, inventory, vm.ref, [NIC], uri=libvirt_uri)
    assert nic.outcome == SUCCEEDED, nic.error
    assert [step.detail for step in nic.steps if step.name == "attach_config"][0] == (
        "pcie-root-port index 4 (ua-passthrough-0000-03-00-0)"
    )
    assert nic.plan["root_ports"] == [
        {"index": 4, "name": "ua-passthrough-0000-03-00-0", "added": True, "devices": [NIC]}
    ]
    assert "+      <alias name='ua-passthrough-0000-03-00-0'/>" in nic.plan["diff"]
    assert "adds a pcie-root-port (ua-passthrough-0000-03-00-0, index 4)" in nic.plan["diff"].splitlines()[0]
    # ... planned as libvirt writes it, but for the address libvirt gives the new port.
    (unplanned,) = [line for line in inactive(domain).splitlines() if line not in planned.splitlines()]
    assert unplanned.startswith("      <address type='pci' domain='0x0000' bus='0x00' slot=")
    assert parse_domain(inactive(domain)).hostdev(NIC).guest == "0000:04:00.0"


def test_detach_takes_the_whole_card_out_and_leaves_the_free_port_it_used(tree, libvirt_uri, domains):
    domain = domains.define("detach")
    attached = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
    assert attached.ok
    result = libvirtd.detach(tree, vms(tree, libvirt_uri), domain.name(), [AUDIO], uri=libvirt_uri)
    assert result.outcome == SUCCEEDED, result.error
    assert result.targets == [AUDIO, GPU] and "0000:01:00.0 leaves too" in result.warnings[0]
    saved = parse_domain(inactive(domain))
    assert saved.hostdevs == [] and [port.index for port in saved.free_ports()] == [3]
    assert inactive(domain) == attached.plan["before"]
    changed = [line for line in result.plan["diff"].splitlines()[2:] if line[:1] in "+-"]
    assert all(line.startswith("-") for line in changed) and sum("<hostdev " in line for line in changed) == 2
    assert [fate["removed"] for fate in result.plan["root_ports"]] == [False]
    assert "(before detach: leaves the root port pci.3: it has no ua-passthrough-… alias" in result.plan["diff"]
    # Undoing the detach gives the domain its card back, line for line.
    assert libvirtd.undo(tree, result.undo, uri=libvirt_uri).outcome == SUCCEEDED
    assert inactive(domain) == attached.plan["after"]
    with pytest.raises(VmError, match=f"does not have {NIC}"):
        libvirtd.detach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri)


def root_ports(domain) -> int:
    return sum(c.model == "pcie-root-port" for c in parse_domain(inactive(domain)).controllers)


def define_linux2020(connection, domains):
    """virt-manager's default q35 guest (14 root ports), as virt-install defines it; TCG, as this host may lack KVM."""
    text = VIRT_INSTALL_LINUX2020.read_text().replace('<domain type="kvm">', '<domain type="qemu">')
    text = re.sub(r"  <uuid>.*</uuid>\n", "", text.replace("<name>linux2020</name>",
                                                       f"<name>pw-test-linux2020-{uuid.uuid4().hex[:8]}</name>"))  # fmt: skip
    domain = connection.defineXML(text)
    domains.track(domain.UUIDString())
    return domain


@pytest.mark.parametrize("kind", ["virt-manager's default", "no free port"])
def test_attach_detach_three_times_leaves_as_many_root_ports_as_after_the_first_attach(
    tree, libvirt_uri, domains, connection, kind
):
    if kind == "no free port":
        domain = domains.define("cycles")
        taken = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri)
        assert taken.plan["root_ports"][0]["name"] == "pci.3"  # the NIC takes the one free port
    else:
        domain = define_linux2020(connection, domains)
    start, ports = inactive(domain), root_ports(domain)
    after_attach, after_detach = [], []
    for _ in range(3):
        attached = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
        assert attached.outcome == SUCCEEDED, attached.error
        after_attach.append(root_ports(domain))
        (used,) = attached.plan["root_ports"]
        planned = libvirt.detach_plan(inactive(domain), [GPU, AUDIO])
        detached = libvirtd.detach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
        assert detached.outcome == SUCCEEDED, detached.error
        after_detach.append(root_ports(domain))
        assert inactive(domain) == start == planned.after  # what the pure plan said, line for line
        assert [(fate["index"], fate["removed"]) for fate in detached.plan["root_ports"]] == [
            (used["index"], used["added"])
        ]
    if kind == "no free port":
        assert (used["index"], used["name"], used["added"]) == (4, "ua-passthrough-0000-01-00-0", True)
        removal = [step for step in detached.steps if step.target == "root port ua-passthrough-0000-01-00-0"]
        assert [(step.name, step.ok) for step in removal] == [("detach_config", True)]
    else:
        assert (used["index"], used["name"], used["added"]) == (7, "pci.7", False)
    assert after_attach == [after_attach[0]] * 3 and after_attach[0] == ports + used["added"]
    assert after_detach == [ports] * 3


def test_undo_of_an_attach_that_added_a_port_and_of_the_detach_that_took_it_puts_back_the_exact_xml(
    tree, libvirt_uri, domains
):
    domain = domains.define("undoport")
    assert libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri).ok
    before = inactive(domain)
    attached = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
    assert attached.ok and attached.undo["root_ports"][0]["added"]
    with_port = inactive(domain)
    detached = libvirtd.detach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
    assert detached.ok and inactive(domain) == before
    assert libvirtd.undo(tree, detached.undo, uri=libvirt_uri).outcome == SUCCEEDED
    assert inactive(domain) == with_port  # the port is back, with its mark
    assert libvirtd.undo(tree, attached.undo, uri=libvirt_uri).outcome == SUCCEEDED
    assert inactive(domain) == before


def test_a_running_domain_does_not_get_a_port_its_running_vm_uses(tree, libvirt_uri, domains):
    import libvirt as lv

    domain = domains.define("busy")
    domain.create()
    # Something hot-plugged live only (not in the saved configuration) sits on pci.3.
    domain.attachDeviceFlags("<interface type='user'><model type='e1000e'/><address type='pci' domain='0x0000' "
                             "bus='0x03' slot='0x00' function='0x0'/></interface>", lv.VIR_DOMAIN_AFFECT_LIVE)  # fmt: skip
    assert [port.index for port in parse_domain(inactive(domain)).empty_root_ports()] == [3]
    result = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], live=False, uri=libvirt_uri)
    assert result.outcome == SUCCEEDED, result.error
    assert [(port["index"], port["added"]) for port in result.plan["root_ports"]] == [(4, True)]
    assert parse_domain(inactive(domain)).hostdev(NIC).guest == "0000:04:00.0"
    domain.destroy()  # once it is off, the port the NIC got is the wizard's to take back
    detached = libvirtd.detach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri)
    assert detached.ok and [fate["removed"] for fate in detached.plan["root_ports"]] == [True]
    assert inactive(domain) == result.plan["before"]


def test_a_function_another_domain_holds_is_refused_naming_that_domain(tree, libvirt_uri, domains):
    first, second = domains.define("holder"), domains.define("other")
    assert libvirtd.attach(tree, vms(tree, libvirt_uri), first.name(), [NIC], uri=libvirt_uri).ok
    untouched = inactive(second)
    with pytest.raises(DeviceHeldElsewhere) as refused:
        libvirtd.attach(tree, vms(tree, libvirt_uri), second.name(), [NIC], uri=libvirt_uri)
    assert (
        f"already belongs to libvirt:{first.name()} (shut off), which has it in its configuration"
        in refused.value.message
    )
    assert inactive(second) == untouched


def test_an_unknown_domain_is_refused_and_one_gone_since_the_listing_too(tree, libvirt_uri, domains):
    with pytest.raises(UnknownVm, match="There is no libvirt VM 'pw-test-nowhere'"):
        libvirtd.attach(tree, vms(tree, libvirt_uri), "libvirt:pw-test-nowhere", [NIC], uri=libvirt_uri)
    domain = domains.define("gone")
    listed = vms(tree, libvirt_uri)
    domain.undefine()
    with pytest.raises(UnknownVm, match="There is no libvirt domain .* \\(any more\\)"):
        libvirtd.attach(tree, listed, domain.name(), [NIC], uri=libvirt_uri)


def test_a_card_half_in_the_configuration_is_refused_before_libvirt_is_asked(tree, libvirt_uri, domains):
    import libvirt as lv

    domain = domains.define("half")
    domain.attachDeviceFlags("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
                             "bus='0x01' slot='0x00' function='0x1'/></source></hostdev>", lv.VIR_DOMAIN_AFFECT_CONFIG)  # fmt: skip
    before = inactive(domain)
    with pytest.raises(VmError, match=f"already has {AUDIO} of the 2 functions that go together here"):
        libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
    assert inactive(domain) == before


def test_undo_puts_back_the_exact_xml_and_keeps_the_vnc_password(tree, libvirt_uri, domains, connection):
    import libvirt as lv

    domain = domains.define("undo", extra="<graphics type='vnc' passwd='pw-1234'/>")
    before = inactive(domain)
    attached = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU, NIC], uri=libvirt_uri)
    assert attached.ok and inactive(domain) != before
    undone = libvirtd.undo(tree, attached.undo, uri=libvirt_uri)
    assert undone.outcome == SUCCEEDED, undone.error
    assert inactive(domain) == before
    secure = domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE)
    assert "passwd='pw-1234'" in secure
    assert libvirtd.undo(tree, attached.undo, uri=libvirt_uri).outcome == UNCHANGED


def test_undo_refuses_a_configuration_changed_since_unless_forced(tree, libvirt_uri, domains):
    domain = domains.define("changed")
    before = inactive(domain)
    attached = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri)
    later = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [GPU], uri=libvirt_uri)
    assert attached.ok and later.ok
    changed = inactive(domain)
    with pytest.raises(ConfigChanged, match="changed after the attach"):
        libvirtd.undo(tree, attached.undo, uri=libvirt_uri)
    assert inactive(domain) == changed
    forced = libvirtd.undo(tree, attached.undo, force=True, uri=libvirt_uri)
    assert forced.outcome == SUCCEEDED and inactive(domain) == before


def test_an_attach_refuses_a_configuration_changed_since_its_diff(tree, libvirt_uri, domains):
    import libvirt as lv

    domain = domains.define("diff")
    seen = vms(tree, libvirt_uri)
    shown = seen.find(domain.name()).fingerprint
    domain.setMemoryFlags(96 * 1024, lv.VIR_DOMAIN_AFFECT_CONFIG | lv.VIR_DOMAIN_MEM_MAXIMUM)
    changed = inactive(domain)
    for listing in (seen, vms(tree, libvirt_uri)):  # the listing of the diff, and a fresh one
        with pytest.raises(ConfigChanged, match="changed since the diff was made"):
            libvirtd.attach(tree, listing, domain.name(), [NIC], fingerprint=shown, uri=libvirt_uri)
        assert inactive(domain) == changed


def _no_real_device(address: str) -> str | None:
    if any(Path("/sys/kernel/iommu_groups").glob("*")):
        return "this host has an IOMMU: a live attach could take a real device from its driver"
    if Path(f"/sys/bus/pci/devices/{address}").exists():
        return f"{address} exists on this host"
    return None


def test_a_live_attach_libvirt_refuses_rolls_back_and_leaves_the_config_as_it_was(tree, libvirt_uri, domains):
    why = _no_real_device(NIC)
    if why:
        pytest.skip(why)
    domain = domains.define("live")
    domain.create()
    before = inactive(domain)
    live_before = domain.XMLDesc(0)
    result = libvirtd.attach(tree, vms(tree, libvirt_uri), domain.name(), [NIC], uri=libvirt_uri)
    assert result.outcome == ROLLED_BACK, (result.outcome, result.error)
    # libvirt's words, kept (9.0: "unsupported configuration: host doesn't support VFIO PCI passthrough").
    assert re.search(r"unsupported configuration: host doesn't support .*passthrough", result.error["message"])
    assert result.error["message"].startswith(f"libvirt refused hot-plugging {NIC} into libvirt:{domain.name()}: ")
    assert [step.name for step in result.steps][-3:] == ["verify", "hotplug", "rollback"]
    assert inactive(domain) == before and domain.XMLDesc(0) == live_before
    assert result.state_after == result.state_before


def test_a_multifunction_card_goes_into_a_running_domains_config_for_its_next_start(tree, libvirt_uri, domains):
    domain = domains.define("multi")
    domain.create()
    listing = vms(tree, libvirt_uri)
    with pytest.raises(VmError, match="cannot take all of it live: .*refuses a multifunction hostdev"):
        libvirtd.attach(tree, listing, domain.name(), [GPU], live=True, uri=libvirt_uri)
    result = libvirtd.attach(tree, listing, domain.name(), [GPU], uri=libvirt_uri)
    assert result.outcome == SUCCEEDED and "hotplug" not in [step.name for step in result.steps]
    assert result.warnings == [f"Not hot-plugged: {GPU}, {AUDIO}: {libvirt.MULTIFUNCTION}."]
    assert parse_domain(domain.XMLDesc(0)).hostdevs == [] and len(parse_domain(inactive(domain)).hostdevs) == 2


def test_query_pci_of_a_running_domain_shows_a_hot_plugged_device_behind_its_root_port(
    libvirt_uri, domains, connection
):
    import libvirt as lv

    domain = domains.define("proof")
    domain.create()
    port = next(c for c in parse_domain(domain.XMLDesc(0)).free_ports())
    domain.attachDeviceFlags(f"<interface type='user'><model type='e1000e'/><address type='pci' domain='0x0000' "
                             f"bus='{port.index:#04x}' slot='0x00' function='0x0'/></interface>", lv.VIR_DOMAIN_AFFECT_LIVE)  # fmt: skip
    handle = Handle(connection, domain)
    found = wait_until(lambda: libvirt.find_in_query_pci(handle.query_pci(), "net0") is not None, 20)
    assert found, json.dumps(handle.query_pci())[:2000]
    shown = libvirt.find_in_query_pci(handle.query_pci(), "net0")
    assert (shown["slot"], shown["function"], shown["parent"], shown["vendor_id"]) == (0, 0, port.alias, "8086")


def test_define_makes_a_new_domain_from_the_generated_xml_and_refuses_a_name_that_exists(
    make_tree, libvirt_uri, domains, connection
):
    inventory = scan(make_tree(desktop()))
    name = f"pw-test-define-{uuid.uuid4().hex[:8]}"
    text = generate(inventory, build_spec(inventory, [GPU, NIC], name=name), "libvirt").text
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        # libvirt defines type='kvm' only where KVM is usable; the rest of the generated XML is kept.
        text = text.replace(
            '<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" type="kvm">', '<domain type="qemu">'
        )
    tree = HostTree(inventory.root)
    result = libvirtd.define_domain(tree, text, uri=libvirt_uri)
    assert result.outcome == SUCCEEDED, result.error
    domains.track(result.undo["uuid"])
    domain = connection.lookupByName(name)
    assert [(h.host, h.guest) for h in parse_domain(inactive(domain)).hostdevs] == [
        (GPU, "0000:01:00.0"), (AUDIO, "0000:01:00.1"), (NIC, "0000:02:00.0")]  # fmt: skip
    assert result.parameters["proof"]["config"][2] == {"host": NIC, "guest": "0000:02:00.0"}
    with pytest.raises(VmError, match=f"A libvirt domain called '{name}' already exists"):
        libvirtd.define_domain(tree, text, uri=libvirt_uri)
    undone = libvirtd.undo(tree, result.undo, uri=libvirt_uri)
    assert undone.outcome == SUCCEEDED, undone.error
    assert name not in [vm.name for vm in vms(tree, libvirt_uri).vms]
