"""passthrough.vms.libvirt and domainxml: real domain XMLs read, and the XML an attach or a detach makes.

The domains are real: two users' q35 gaming VMs (joe-p's win10 on an X570, sirspudd's
CompromisedBeast on a Threadripper, each from the machine the host tree describes),
libvirt's own 2016 test XMLs (i440fx, decimal and multi-domain
addresses, <interface type='hostdev'>) and the generator's output. Which root port a card
takes, and which a detach takes back: tests/test_vms_libvirt_rootports.py.
"""

from __future__ import annotations

import pytest

from passthrough.configgen import build_spec, generate
from passthrough.configgen.spec import PassedDevice, VmSpec
from passthrough.host import HostTree
from passthrough.ops.interlock import confirmation_phrase
from passthrough.pci.scan import scan
from passthrough.vms import libvirt
from passthrough.vms.domainxml import parse_domain
from passthrough.vms.model import VmError, VmInventory, VmSource
from passthrough.vms.validate import prepare
from tests.configgen_support import desktop
from tests.kernelhosts import threadripper
from tests.libvirt_xml_support import (
    AUDIO,
    BEAST,
    GPU,
    LIBVIRT_2016,
    NIC,
    REALWORLD,
    RX580,
    RX580_AUDIO,
    WIN10,
    added_lines,
    planned,
    real,
)

pytestmark = pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"the real-world fixtures are not at {REALWORLD}")


# Reading ---------------------------------------------------------------------------------
def test_a_real_q35_domain_reads_with_its_machine_controllers_and_hostdevs():
    vm = libvirt.vm_from_xml(real(WIN10), "shut off")
    assert (vm.ref, vm.machine, vm.q35) == ("libvirt:win10", "pc-q35-4.2", True)
    assert [(d.host, d.guest, d.config, d.live) for d in vm.devices][:2] == [
        ("0000:0b:00.0", "0000:04:00.0", True, False),
        ("0000:0b:00.1", "0000:05:00.0", True, False),
    ]
    assert len(vm.devices) == 7 and vm.config == real(WIN10) and vm.free_ports is None
    domain = parse_domain(real(WIN10))
    assert [h.managed for h in domain.hostdevs] == [False] * 7
    # Root ports 11 and 12 have nothing on their bus; 13 has the pcie-to-pci bridge behind it.
    assert [port.index for port in domain.free_ports()] == [11, 12]


def test_a_running_domain_holds_live_what_its_live_xml_lists_and_says_where_a_hot_plug_goes():
    vm = libvirt.vm_from_xml(real(WIN10), "running", live=real(WIN10))
    assert all(device.live and device.config for device in vm.devices)
    assert (vm.free_ports, vm.hotplug) == (2, None)
    full = libvirt.vm_from_xml(real(BEAST), "running", live=real(BEAST))
    assert (full.free_ports, full.hotplug) == (0, libvirt.NO_PORT)
    assert "empty root port" in libvirt.NO_PORT


def test_libvirts_own_test_xmls_read_decimal_and_multi_domain_addresses_and_hostdev_interfaces():
    multidomain = parse_domain(real(LIBVIRT_2016 / "qemuxml2argv-hostdev-vfio-multidomain.xml"))
    (held,) = multidomain.hostdevs
    # bus='32' slot='15' function='3' are decimal, as libvirt reads them (strtol base 0).
    assert (held.host, held.guest, held.managed, multidomain.i440fx) == ("55aa:20:0f.3", None, True, True)
    interface = parse_domain(real(LIBVIRT_2016 / "qemuxml2argv-net-hostdev-vfio.xml"))
    assert [(h.host, h.interface) for h in interface.hostdevs] == [("0000:03:07.1", True)]
    for path in sorted(LIBVIRT_2016.glob("*.xml")):
        assert parse_domain(real(path)).hostdevs, path.name


def test_the_generators_domain_reads_back_with_the_card_on_one_slot(make_tree):
    inventory = scan(make_tree(desktop()))
    text = generate(inventory, build_spec(inventory, [GPU, NIC]), "libvirt").text
    domain = parse_domain(text)
    assert [(h.host, h.guest, h.multifunction) for h in domain.hostdevs] == [
        (GPU, "0000:01:00.0", True),
        (AUDIO, "0000:01:00.1", False),
        (NIC, "0000:02:00.0", False),
    ]
    assert [(c.index, c.model) for c in domain.controllers] == [
        (0, "pcie-root"),
        (1, "pcie-root-port"),
        (2, "pcie-root-port"),
    ]


def test_xml_that_is_not_a_domain_or_declares_entities_is_refused_in_words():
    with pytest.raises(VmError, match="cannot be read"):
        parse_domain("<domain><devices>")
    with pytest.raises(VmError, match="not a libvirt domain"):
        parse_domain("<network><name>default</name></network>")
    with pytest.raises(VmError, match="DOCTYPE or entities"):
        parse_domain('<!DOCTYPE d [<!ENTITY a "aaaa">]><domain><devices/></domain>')
    with pytest.raises(VmError, match="not a number"):
        parse_domain("<domain><devices><hostdev mode='subsystem' type='pci'><source>"
                     "<address bus='zz' slot='0' function='0'/></source></hostdev></devices></domain>")  # fmt: skip


# Attach ------------------------------------------------------------------------------------
def test_a_gpu_and_its_audio_get_one_new_root_port_and_share_its_slot(make_tree):
    vm, prepared, after = planned(make_tree, threadripper(), real(BEAST), [RX580])
    assert prepared.addresses == [RX580, RX580_AUDIO]
    added = added_lines(real(BEAST), after)
    # No root port of the Beast is empty, so one is added: the next controller index (12 is the
    # highest), chassis 13, the port after the highest (0x15), and the wizard's mark as its alias.
    assert added[:5] == [
        "    <controller type='pci' index='13' model='pcie-root-port'>",
        "      <model name='pcie-root-port'/>",
        "      <target chassis='13' port='0x16'/>",
        "      <alias name='ua-passthrough-0000-43-00-0'/>",
        "    </controller>",
    ]
    assert libvirt.plan_change(vm, prepared)[1] == (
        f"attach: {RX580}, {RX580_AUDIO} adds a pcie-root-port (ua-passthrough-0000-43-00-0, index 13): "
        "no root port is free"
    )
    domain = parse_domain(after)
    assert [(h.host, h.guest, h.multifunction, h.managed) for h in domain.hostdevs[-2:]] == [
        (RX580, "0000:0d:00.0", True, True),
        (RX580_AUDIO, "0000:0d:00.1", False, True),
    ]
    assert sum(1 for line in added if "pcie-root-port'>" in line) == 1
    # The new port follows the last PCI controller; the hostdevs follow the last hostdev.
    lines = after.splitlines()
    assert lines[lines.index(added[0]) - 1] == "    </controller>" and "index='12'" in lines[lines.index(added[0]) - 5]
    assert lines[lines.index("    <memballoon model='none'/>") - 1] == "    </hostdev>"
    assert libvirt.vm_from_xml(after, "shut off").holds(RX580_AUDIO).guest == "0000:0d:00.1"


def test_a_rom_file_goes_on_the_gpu_function_as_the_generator_writes_it(make_tree):
    # The worker gives a VM only a ROM that is on the host, in a ROM directory (passthrough.vms.romfile).
    host = threadripper(files={"usr/share/vgabios/rx580.rom": "\x55\xaa polaris vbios\n"})
    _, _, after = planned(make_tree, host, real(BEAST), [RX580], rom_file="/usr/share/vgabios/rx580.rom")
    added = added_lines(real(BEAST), after)
    assert added.count("      <rom file='/usr/share/vgabios/rx580.rom'/>") == 1
    assert added.index("      <rom file='/usr/share/vgabios/rx580.rom'/>") < added.index(
        "        <address domain='0x0000' bus='0x43' slot='0x00' function='0x1'/>"
    )


def test_a_nic_on_i440fx_takes_a_free_slot_of_bus_0_and_no_controller(make_tree):
    text = real(LIBVIRT_2016 / "qemuxml2argv-hostdev-vfio-multidomain.xml")
    vm, prepared, after = planned(make_tree, desktop(), text, [NIC])
    assert prepared.spec.machine == "i440fx"
    added = added_lines(text, after)
    assert not [line for line in added if "<controller" in line]
    assert "      <address type='pci' domain='0x0000' bus='0x00' slot='0x10' function='0x0'/>" in added
    # A second card takes the next free slot.
    again = libvirt.plan_attach(libvirt.vm_from_xml(after, "shut off"), prepare(
        HostTree(prepared.inventory.root), VmInventory([VmSource("libvirt", True, "t", [vm])]), vm.ref, [GPU]))  # fmt: skip
    assert [h.guest for h in parse_domain(again).hostdevs[-2:]] == ["0000:00:11.0", "0000:00:11.1"]


def test_an_unknown_machine_is_refused_in_words(make_tree):
    text = real(WIN10).replace("machine='pc-q35-4.2'", "machine='pseries'")
    with pytest.raises(VmError, match="placed on q35 and i440fx"):
        planned(make_tree, desktop(), text, [NIC])


# Hot-plug ------------------------------------------------------------------------------------
def test_a_single_function_device_is_hot_plugged_on_the_first_free_root_port(make_tree):
    inventory = scan(make_tree(desktop()))
    plugs, refused = libvirt.live_placements(parse_domain(real(WIN10)), build_spec(inventory, [NIC]))
    assert refused == []
    ((address, element),) = plugs
    assert address == NIC
    assert element.find("address").attrib == {"type": "pci", "domain": "0x0000", "bus": "0x0b", "slot": "0x00",
                                              "function": "0x0"}  # fmt: skip


def test_what_cannot_be_hot_plugged_is_said_per_card(make_tree):
    inventory = scan(make_tree(desktop()))
    win10 = parse_domain(real(WIN10))
    plugs, refused = libvirt.live_placements(win10, build_spec(inventory, [GPU, NIC]))
    assert [address for address, _ in plugs] == [NIC]
    assert refused == [f"{GPU}, {AUDIO}: {libvirt.MULTIFUNCTION}"]
    primary = VmSpec([PassedDevice(RX580, x_vga=True)], primary_gpu=True)
    assert libvirt.live_placements(win10, primary) == ([], [f"{RX580}: {libvirt.PRIMARY_GPU}"])
    # win10 runs with 01:00.0 already (its live XML lists it): nothing to plug, nothing to refuse.
    assert libvirt.live_placements(win10, VmSpec([PassedDevice("0000:01:00.0")])) == ([], [])
    beast = parse_domain(real(BEAST))
    assert libvirt.live_placements(beast, build_spec(inventory, [NIC])) == ([], [f"{NIC}: {libvirt.NO_PORT}"])
    i440fx = parse_domain(real(LIBVIRT_2016 / "qemuxml2argv-hostdev-vfio.xml"))
    assert libvirt.live_placements(i440fx, build_spec(inventory, [NIC])) == ([], [f"{NIC}: {libvirt.NO_BRIDGE}"])


def test_an_i440fx_vm_with_a_pci_bridge_takes_a_device_on_the_bridge(make_tree):
    text = real(LIBVIRT_2016 / "qemuxml2argv-hostdev-vfio.xml").replace(
        "<controller type='pci' index='0' model='pci-root'/>",
        "<controller type='pci' index='0' model='pci-root'/>\n    <controller type='pci' index='1' model='pci-bridge'>"
        "\n      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>\n    </controller>",
    )
    inventory = scan(make_tree(desktop()))
    ((_, element),) = libvirt.live_placements(parse_domain(text), build_spec(inventory, [NIC]))[0]
    assert (element.find("address").get("bus"), element.find("address").get("slot")) == ("0x01", "0x01")
    assert libvirt.vm_from_xml(text, "running", live=text).hotplug is None


# Detach ------------------------------------------------------------------------------------
def test_detach_takes_the_hostdevs_out_and_the_root_port_their_attach_added(make_tree):
    vm, _, after = planned(make_tree, threadripper(), real(BEAST), [RX580])
    attached = libvirt.vm_from_xml(after, "shut off")
    # The Beast is as it was: not even the port the attach added is left.
    assert libvirt.plan_detach(attached, [RX580, RX580_AUDIO]) == real(BEAST)
    plan = libvirt.detach_plan(after, [RX580, RX580_AUDIO])
    assert (plan.after, plan.removed) == (real(BEAST), [13])
    assert plan.doing == (
        "detach: removes the root port ua-passthrough-0000-43-00-0: the attach of 0000:43:00.0 added it and nothing "
        "else sits on it"
    )


def test_detach_takes_the_other_functions_of_a_card_and_refuses_what_the_vm_lacks(make_tree):
    _, _, after = planned(make_tree, threadripper(), real(BEAST), [RX580])
    domain = parse_domain(after)
    assert libvirt.slot_mates(domain, [RX580_AUDIO]) == [RX580_AUDIO, RX580]
    # The Radeon VII's functions sit on two guest slots in the real config: each is a card of its own there.
    assert libvirt.slot_mates(domain, ["0000:0d:00.0"]) == ["0000:0d:00.0"]
    vm = libvirt.vm_from_xml(after, "shut off")
    with pytest.raises(VmError, match="has no hostdev 0000:09:00.0"):
        libvirt.plan_detach(vm, ["0000:09:00.0"])
    interface = libvirt.vm_from_xml(real(LIBVIRT_2016 / "qemuxml2argv-net-hostdev-vfio.xml"), "shut off")
    with pytest.raises(VmError, match="network interface") as refused:
        libvirt.plan_detach(interface, ["0000:03:07.1"])
    assert "virsh detach-interface" in (refused.value.hint or "")


def test_a_host_critical_function_needs_its_confirmation_before_any_plan(make_tree):
    from passthrough.ops.errors import ConfirmationRequired
    from tests.kernelhosts import I211, x570

    with pytest.raises(ConfirmationRequired):
        planned(make_tree, x570(), real(WIN10), [I211.address])
    _, _, after = planned(make_tree, x570(), real(WIN10), [I211.address], confirm=confirmation_phrase([I211.address]))
    # win10's root ports 11 and 12 are empty: the NIC takes the lower.
    assert parse_domain(after).hostdev(I211.address).guest == "0000:0b:00.0"


# Proof ---------------------------------------------------------------------------------------
# A trimmed reply of QEMU 7.2's query-pci (TCG q35 under libvirt 9.0 on this project's CI
# machine): an e1000e hot-plugged as net0 behind root port pci.3, whose bus the firmware numbered 3.
QUERY_PCI = {"return": [{"bus": 0, "devices": [
    {"bus": 0, "slot": 0, "function": 0, "qdev_id": "", "id": {"vendor": 32902, "device": 10688}},
    {"bus": 0, "slot": 2, "function": 2, "qdev_id": "pci.3", "id": {"vendor": 6966, "device": 12},
     "pci_bridge": {"bus": {"number": 0, "secondary": 3, "subordinate": 3}, "devices": [
         {"bus": 3, "slot": 0, "function": 0, "qdev_id": "net0", "id": {"vendor": 32902, "device": 4307}}]}},
]}]}  # fmt: skip


def test_query_pci_shows_where_the_guest_sees_a_device_and_behind_which_port():
    assert libvirt.find_in_query_pci(QUERY_PCI, "net0") == {
        "qdev_id": "net0", "bus": 3, "slot": 0, "function": 0, "parent": "pci.3", "vendor_id": "8086",
        "device_id": "10d3",
    }  # fmt: skip
    assert libvirt.find_in_query_pci(QUERY_PCI, "hostdev0") is None
