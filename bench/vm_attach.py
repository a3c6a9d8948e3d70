"""Benchmark: from calling the libvirt backend's attach() to the device listed in the domain's saved XML.

Against the real libvirtd (started here, as the tests start it, when none answers; stopped
again after). Each run defines a fresh TCG q35 domain without disks, then times:
  * attach(): from the call to the moment ``virsh dumpxml --inactive`` (XMLDesc with
    VIR_DOMAIN_XML_INACTIVE, read separately after it returns) lists every function;
  * the job's whole path: reading every domain (libvirtd.read, as the worker does before it
    acts) plus attach();
  * detach() of the same card, to the XML no longer listing it.
for a GPU with its HDMI audio (one root port and two hostdevs: three libvirt calls) and for a
single NIC (two calls), and prints min / median / max over the runs. Needs root.

Usage: .venv/bin/python bench/vm_attach.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from passthrough.host import HostTree  # noqa: E402
from passthrough.hosttrees.tree import write_tree  # noqa: E402
from passthrough.vms import libvirtd  # noqa: E402
from passthrough.vms.domainxml import parse_domain  # noqa: E402
from passthrough.vms.libvirtconn import version  # noqa: E402
from passthrough.vms.model import VmInventory  # noqa: E402
from tests.configgen_support import desktop  # noqa: E402
from tests.libvirtd_support import URI, Daemons, answers, domain_xml  # noqa: E402

CARDS = {"GPU + HDMI audio": ["0000:01:00.0"], "NIC": ["0000:03:00.0"]}
EXPECTED = {"GPU + HDMI audio": ["0000:01:00.0", "0000:01:00.1"], "NIC": ["0000:03:00.0"]}


def _ms(values: list[float]) -> str:
    return f"{min(values) * 1000:7.1f} {statistics.median(values) * 1000:7.1f} {max(values) * 1000:7.1f}"


def run(runs: int) -> None:
    import libvirt as lv

    root = tempfile.mkdtemp(prefix="bench-vm-attach-")
    write_tree(desktop(), root)
    tree = HostTree(root)
    conn = lv.open(URI)
    where = f"{URI} (libvirt {version(conn)})"
    timings: dict[str, dict[str, list[float]]] = {
        card: {"attach": [], "read+attach": [], "detach": []} for card in CARDS
    }
    try:
        for _ in range(runs):
            for card, addresses in CARDS.items():
                domain = conn.defineXML(domain_xml(f"pw-bench-{uuid.uuid4().hex[:8]}"))
                try:
                    started = time.perf_counter()
                    inventory = VmInventory([libvirtd.read(tree, uri=URI)])
                    read_done = time.perf_counter()
                    result = libvirtd.attach(tree, inventory, domain.name(), addresses, uri=URI)
                    saved = parse_domain(domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
                    listed = time.perf_counter()
                    assert result.ok, result.error
                    assert all(saved.hostdev(a) for a in EXPECTED[card]), "the saved XML does not list the device"
                    timings[card]["attach"].append(listed - read_done)
                    timings[card]["read+attach"].append(listed - started)
                    inventory = VmInventory([libvirtd.read(tree, uri=URI)])
                    started = time.perf_counter()
                    result = libvirtd.detach(tree, inventory, domain.name(), addresses, uri=URI)
                    saved = parse_domain(domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
                    timings[card]["detach"].append(time.perf_counter() - started)
                    assert result.ok and not saved.hostdevs, result.error
                finally:
                    domain.undefine()
    finally:
        conn.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{where}; {runs} runs each; times in ms (min median max)")
    for card, measured in timings.items():
        for what, values in measured.items():
            print(f"  {card:17} {what:12} {_ms(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    if os.geteuid() != 0:
        sys.exit("bench/vm_attach.py needs root: it defines domains in qemu:///system (and may start libvirtd).")
    daemons = None
    if not answers():
        daemons = Daemons()
        started = time.perf_counter()
        daemons.start()
        print(f"started libvirtd: first answer after {time.perf_counter() - started:.1f} s")
    try:
        run(runs)
    finally:
        if daemons is not None:
            daemons.stop()


if __name__ == "__main__":
    main()
