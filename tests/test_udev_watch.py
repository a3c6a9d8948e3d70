"""The worker's udev watcher, against the real kernel of the machine running the tests.

It needs root and a device that can be unbound without harm: the virtio RNG of a KVM
guest (1af4:1044, the VM's extra entropy source). Anywhere else it skips; it never
touches any other device.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

SYS = Path("/sys/bus/pci")


def _harmless_device() -> str | None:
    for device in sorted((SYS / "devices").glob("*")) if SYS.exists() else []:
        try:
            ids = ((device / "vendor").read_text().strip(), (device / "device").read_text().strip())
            driver = os.path.basename(os.readlink(device / "driver"))
        except OSError:
            continue
        if ids == ("0x1af4", "0x1044") and driver == "virtio-pci":
            return device.name
    return None


HARMLESS = _harmless_device()
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="unbinding a device needs root"),
    pytest.mark.skipif(HARMLESS is None, reason="needs a virtio RNG (1af4:1044) on virtio-pci, safe to unbind briefly"),
]


def _unbind_and_bind(address: str) -> None:
    time.sleep(0.5)
    (SYS / "drivers/virtio-pci/unbind").write_text(address)
    time.sleep(0.3)
    (SYS / "drivers/virtio-pci/bind").write_text(address)


def test_pci_unbind_and_bind_events_trigger_one_snapshot_burst():
    from webui.jobs.worker import watch_pci_events

    bursts: list[list[str]] = []
    stop = threading.Event()

    def on_burst(events: list[str]) -> None:
        bursts.append(events)
        stop.set()

    watcher = threading.Thread(target=watch_pci_events, kwargs={"stop": stop, "on_burst": on_burst}, daemon=True)
    watcher.start()
    try:
        _unbind_and_bind(HARMLESS)
        watcher.join(timeout=10)
    finally:
        stop.set()
        if not os.path.exists(SYS / f"devices/{HARMLESS}/driver"):
            (SYS / "drivers/virtio-pci/bind").write_text(HARMLESS)
    assert bursts == [[f"unbind {HARMLESS}", f"bind {HARMLESS}"]]


@pytest.mark.django_db(transaction=True)
def test_a_change_made_by_hand_reaches_a_snapshot(settings):
    from webui.hosts.models import Snapshot
    from webui.jobs.worker import _snapshot_after_events, watch_pci_events

    settings.PASSTHROUGH_ROOT = "/"
    settings.PASSTHROUGH_KERNEL = "live"
    stop = threading.Event()

    def on_burst(events: list[str]) -> None:
        _snapshot_after_events(events)
        stop.set()

    watcher = threading.Thread(target=watch_pci_events, kwargs={"stop": stop, "on_burst": on_burst}, daemon=True)
    watcher.start()
    _unbind_and_bind(HARMLESS)
    watcher.join(timeout=10)
    snapshot = Snapshot.objects.get(source="udev")
    assert snapshot.reason == f"unbind {HARMLESS}, bind {HARMLESS}"
    assert snapshot.parsed.device(HARMLESS).driver == "virtio-pci"
