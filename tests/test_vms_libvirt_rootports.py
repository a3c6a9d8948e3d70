"""passthrough.vms.rootports through the libvirt planner: a card takes a free root port, one is
added only when none is free, and a detach takes back only what its attach added.

On virt-manager's default q35 guest as libvirt keeps it (tests/data/libvirt) and the real
domains of tests/test_vms_libvirt_xml.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from passthrough.configgen import build_spec
from passthrough.configgen.spec import PassedDevice, VmSpec
from passthrough.pci.scan import scan
from passthrough.vms import give, libvirt, rootports
from passthrough.vms.domainxml import PciController, parse_domain
from passthrough.vms.model import config_diff
from passthrough.vms.rootports import live_buses
from tests.configgen_support import desktop
from tests.kernelhosts import threadripper
from tests.libvirt_xml_support import (
    AUDIO,
    BEAST,
    GPU,
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
