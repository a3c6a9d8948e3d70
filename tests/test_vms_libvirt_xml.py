"""passthrough.vms.libvirt and domainxml: real domain XMLs read, and the XML an attach or a detach makes.

The domains are real: two users' q35 gaming VMs (joe-p's win10 on an X570, sirspudd's
CompromisedBeast on a Threadripper, each from the machine the host tree describes),
virt-manager's default q35 guest with its 14 root ports as libvirt keeps it
(tests/data/libvirt), libvirt's own 2016 test XMLs (i440fx, decimal and multi-domain
addresses, <interface type='hostdev'>) and the generator's output.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from passthrough.configgen import build_spec, generate
from passthrough.configgen.spec import PassedDevice, VmSpec
from passthrough.host import HostTree
from passthrough.ops.interlock import confirmation_phrase
from passthrough.pci.scan import scan
from passthrough.vms import give, libvirt, rootports
from passthrough.vms.domainxml import PciController, parse_domain
from passthrough.vms.model import VmError, VmInventory, VmSource, config_diff
from passthrough.vms.rootports import live_buses
from passthrough.vms.validate import prepare
from tests.configgen_support import desktop
from tests.kernelhosts import threadripper

REALWORLD = Path("/work/shared/fixtures/realworld")
WIN10 = REALWORLD / "joe-p-vfio-headless/original/win10.xml"
BEAST = REALWORLD / "sirspudd-threadripper-1950x/extracted/post.block7.txt"
LIBVIRT_2016 = REALWORLD / "libvirt-2016-open-power-fork/qemuxml2argvdata"
RX580, RX580_AUDIO = "0000:43:00.0", "0000:43:00.1"
GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:03:00.0"

pytestmark = pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"the real-world fixtures are not at {REALWORLD}")


def real(path: Path) -> str:
    return path.read_text()


def added_lines(before: str, after: str) -> list[str]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    assert not [line for line in diff[2:] if line.startswith("-")], "a plan only adds lines"
    return [line[1:] for line in diff[2:] if line.startswith("+")]


def planned(make_tree, spec, text: str, addresses: list[str], state: str = "shut off", **options):
    tree = HostTree(make_tree(spec))
    vm = libvirt.vm_from_xml(text, state)
    prepared = prepare(tree, VmInventory([VmSource("libvirt", True, "test", [vm])]), vm.ref, addresses, **options)
    return vm, prepared, libvirt.plan_attach(vm, prepared)


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


# Root ports: a free one is used, one is added only when none is, and a detach takes back what it added --------
LINUX2020 = (
    Path(__file__).parent / "data/libvirt/linux2020.inactive.xml"
)  # virt-manager's q35 default, as libvirt keeps it
ONE_FUNCTION_CARDS = ["0000:21:00.0", "0000:22:00.0", "0000:23:00.0"]
LIVE_ONLY_HOSTDEV = """    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x0a' slot='0x00' function='0x0'/>
      </source>
      <alias name='hostdev0'/>
      <address type='pci' domain='0x0000' bus='{bus}' slot='0x00' function='{function}'/>
    </hostdev>
"""


def root_ports(text: str) -> list[int]:
    return [c.index for c in parse_domain(text).controllers if c.model == "pcie-root-port"]


def with_live_hostdev(text: str, bus: str, function: str = "0x0") -> str:
    """``text`` as a running VM's XML once a host function was hot-plugged onto ``bus`` (live only)."""
    return text.replace("    <memballoon", LIVE_ONLY_HOSTDEV.format(bus=bus, function=function) + "    <memballoon", 1)


def test_virt_managers_default_q35_domain_has_eight_empty_root_ports_and_a_card_takes_the_lowest(make_tree):
    text = real(LINUX2020)
    domain = parse_domain(text)
    assert len(root_ports(text)) == 14
    # libvirt put the NIC, USB, virtio-serial, disk, balloon and RNG on ports 1 to 6.
    assert [port.index for port in domain.empty_root_ports()] == [7, 8, 9, 10, 11, 12, 13, 14]
    assert domain.occupants[4] == ["disk vda"] and domain.occupants[6] == ["rng (virtio)"]
    vm, prepared, after = planned(make_tree, desktop(), text, [GPU])
    added = added_lines(text, after)
    assert not [line for line in added if "<controller" in line or "<alias" in line]
    assert [(h.host, h.guest, h.multifunction) for h in parse_domain(after).hostdevs] == [
        (GPU, "0000:07:00.0", True),
        (AUDIO, "0000:07:00.1", False),
    ]
    assert root_ports(after) == root_ports(text)
    # The diff the page shows says it in its label.
    after_too, doing = libvirt.plan_change(vm, prepared)
    assert (after_too, doing) == (after, f"attach: {GPU}, {AUDIO} uses the free root port pci.7")
    assert config_diff(vm.ref, text, after, doing).splitlines()[:2] == [
        f"--- libvirt:linux2020 (before attach: {GPU}, {AUDIO} uses the free root port pci.7)",
        f"+++ libvirt:linux2020 (after attach: {GPU}, {AUDIO} uses the free root port pci.7)",
    ]
    assert give.planned_change(vm, prepared) == (after, doing) and give.planned_config(vm, prepared) == after


def test_cards_take_the_free_root_ports_lowest_first_and_only_then_get_new_ones():
    win10 = parse_domain(real(WIN10))  # root ports 11 and 12 are empty; 14 is the highest controller index
    plan = libvirt.new_elements(win10, VmSpec([PassedDevice(address) for address in ONE_FUNCTION_CARDS]))
    assert [(port.index, port.name, port.added) for port in plan.ports] == [
        (11, "pci.11", False),
        (12, "pci.12", False),
        (15, "ua-passthrough-0000-23-00-0", True),
    ]
    assert [element.get("index") for element in plan.controllers] == ["15"]
    assert [element.find("address").get("bus") for element in plan.hostdevs] == ["0x0b", "0x0c", "0x0f"]
    assert plan.doing == (
        "attach: 0000:21:00.0 uses the free root port pci.11; 0000:22:00.0 uses the free root port pci.12; "
        "0000:23:00.0 adds a pcie-root-port (ua-passthrough-0000-23-00-0, index 15): no root port is free"
    )


@pytest.mark.parametrize("machine", ["linux2020", "beast"])
def test_attach_detach_cycles_give_back_the_domain_as_it_was_with_as_many_root_ports(make_tree, machine):
    """linux2020 has free ports (the card uses one, which stays); the Beast has none (a port comes and goes)."""
    text, spec, card = (real(LINUX2020), desktop(), [GPU, AUDIO]) if machine == "linux2020" else (
        real(BEAST), threadripper(), [RX580, RX580_AUDIO])  # fmt: skip
    counts = []
    current = text
    for _ in range(3):
        _, _, attached = planned(make_tree, spec, current, card[:1])
        counts.append(len(root_ports(attached)))
        current = libvirt.plan_detach(libvirt.vm_from_xml(attached, "shut off"), card)
        assert current == text
    assert counts == [len(root_ports(text)) + (machine == "beast")] * 3


def test_a_running_domain_takes_a_port_free_in_the_running_vm_too_and_plugs_the_card_there(make_tree):
    text = real(LINUX2020)
    live = with_live_hostdev(text, "0x07")  # pci.7 is free in the configuration, not in the running VM
    inventory = scan(make_tree(desktop()))
    spec = build_spec(inventory, [NIC])
    assert libvirt.new_elements(parse_domain(text), spec).ports[0].index == 7  # shut off: the lowest
    plan = libvirt.new_elements(parse_domain(text), spec, running=True, live_buses=live_buses(parse_domain(live)))
    assert [(port.index, port.added) for port in plan.ports] == [(8, False)]
    ((address, element),) = libvirt.live_placements(parse_domain(live), spec, plan)[0]
    assert (address, element.find("address").get("bus")) == (NIC, "0x08")  # the same port as the configuration
    # The page plans from the snapshot, which knows the running VM's host functions and their live addresses.
    vm, prepared, after = planned(make_tree, desktop(), text, [NIC], state="running")
    assert parse_domain(after).hostdev(NIC).guest == "0000:07:00.0"  # its live XML was its saved one
    vm = libvirt.vm_from_xml(text, "running", live=live)
    assert libvirt.vm_live_buses(vm) == {7}
    after, doing = libvirt.plan_change(vm, prepared)
    assert parse_domain(after).hostdev(NIC).guest == "0000:08:00.0" and doing.endswith("the free root port pci.8")


def test_a_port_with_hotplug_off_takes_a_card_for_the_next_start_but_not_in_a_running_domain(make_tree):
    text = real(LINUX2020).replace(
        "<target chassis='7' port='0x16'/>", "<target chassis='7' port='0x16' hotplug='off'/>"
    )
    spec = build_spec(scan(make_tree(desktop())), [NIC])
    assert libvirt.new_elements(parse_domain(text), spec).ports[0].index == 7
    assert libvirt.new_elements(parse_domain(text), spec, running=True).ports[0].index == 8


def test_a_detach_leaves_a_root_port_its_attach_did_not_add_or_that_something_else_sits_on_and_says_why(make_tree):
    _, _, linux = planned(make_tree, desktop(), real(LINUX2020), [NIC])
    kept = libvirt.detach_plan(linux, [NIC])
    assert (kept.after, kept.removed) == (real(LINUX2020), [])
    assert kept.doing == (
        "detach: leaves the root port pci.7: it has no ua-passthrough-… alias, so no attach of the wizard's added "
        "it; it stays, free for the next device"
    )
    _, _, beast = planned(make_tree, threadripper(), real(BEAST), [RX580])
    (fate,) = libvirt.detach_plan(beast, [RX580]).ports  # the audio function stays on the port
    assert (fate.removed, fate.reason) == (
        False,
        f"the attach of {RX580} added it, but hostdev {RX580_AUDIO} sits on it",
    )
    (fate,) = libvirt.detach_plan(beast, [RX580_AUDIO]).ports
    assert (fate.removed, fate.reason) == (False, f"the wizard added it for {RX580}, which does not leave now")
    running = parse_domain(with_live_hostdev(beast, "0x0d", "0x2"))  # the running VM has more on that port
    plan = libvirt.detach_plan(beast, [RX580, RX580_AUDIO], live=running)
    assert plan.removed == [] and plan.ports[0].reason == (
        f"the attach of {RX580} added it, but the running VM has hostdev 0000:0a:00.0 on it"
    )
    assert "<controller type='pci' index='13'" in plan.after and parse_domain(plan.after).hostdevs[-1].host != RX580


def test_the_wizards_mark_names_the_card_and_is_never_given_twice():
    assert rootports.mark("0000:43:00.0", set()) == "ua-passthrough-0000-43-00-0"
    assert rootports.mark("0000:43:00.0", {"ua-passthrough-0000-43-00-0"}) == "ua-passthrough-0000-43-00-0-2"
    port = PciController(13, "pcie-root-port", alias="ua-passthrough-0000-43-00-0-2")
    assert rootports.added_for(port) == "0000:43:00.0"
    for alias in (None, "pci.13", "ua-mine", "ua-passthrough-gpu"):
        assert rootports.added_for(PciController(13, "pcie-root-port", alias=alias)) is None
