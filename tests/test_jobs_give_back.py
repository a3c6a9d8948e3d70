"""Giving the boot GPU back through the page and a real worker: the console comes back, and
a binding at boot that would take the GPU again is said and can be stopped from the page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from passthrough.host import HostTree
from passthrough.hosttrees.tree import write_tree
from passthrough.ops.persist import RULES_FILE, persisted_bindings
from tests.kernelhosts import GT710, GT710_AUDIO, x570
from tests.test_ops_persist import debian_files
from tests.web_support import signed_in
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.hosts.models import Host
from webui.jobs.models import Job, State
from webui.jobs.service import submit

pytestmark = [requires_redis, pytest.mark.worker]

BOOT, BOOT_AUDIO = GT710.address, GT710_AUDIO.address


def test_the_boot_gpu_given_back_from_its_bind_job_gets_its_console_and_can_stop_binding_at_boot(
    start_worker, tmp_path
):
    root = write_tree(x570(console="efifb", files=debian_files()), tmp_path / "host")
    tree = HostTree(root)
    start_worker(root, "x570")
    host = Host.objects.get(name="x570")
    alice = operator_named("alice")
    at_boot = {"native_drivers": None, "confirm": BOOT, "fingerprint": None}
    assert (
        wait_for_job(submit(host=host, action="persist_binding", targets=[BOOT], parameters=at_boot, user=alice)).state
        == State.SUCCEEDED
    )
    bind = wait_for_job(
        submit(host=host, action="bind_vfio", targets=[BOOT], parameters={"confirm": BOOT, "release_console": True}, user=alice)
    )  # fmt: skip
    assert bind.state == State.SUCCEEDED, bind.message
    assert tree.read("sys/class/vtconsole/vtcon1/bind") == "0"
    page = signed_in(alice)

    page.post(reverse("job_give_back", kwargs={"pk": bind.pk}))
    give_back = wait_for_job(Job.objects.get(action="restore_driver"))

    assert give_back.state == State.SUCCEEDED, give_back.message
    assert tree.link_name(f"sys/bus/pci/devices/{BOOT}/driver") == "nouveau"
    assert tree.read("sys/class/vtconsole/vtcon1/bind") == "1"
    assert "the next reboot takes them from the host again" in give_back.message
    assert "Also stop binding it at boot" in page.get(reverse("job", kwargs={"pk": give_back.pk})).content.decode()

    page.post(reverse("job_give_back", kwargs={"pk": give_back.pk}))
    stop = wait_for_job(Job.objects.get(action="unpersist_binding"))

    assert stop.state == State.SUCCEEDED, stop.message
    assert persisted_bindings(tree) == {} and not tree.exists(RULES_FILE)
    assert stop.targets == [BOOT, BOOT_AUDIO]
