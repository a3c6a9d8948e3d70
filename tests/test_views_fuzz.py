"""Hypothesis-generated bad input sent to every view that acts: clear refusals, no 500, no writes.

A real worker runs on the duo's tree (kernel double), so anything the views let through
would reach the tree. Every request here is one the app must refuse: addresses that are
not addresses or not on the host, groups that are not there or cannot go, reset methods
the device does not list, VF counts out of range, wrong types, junk fields, wrong
confirmations. Afterwards the tree is byte-for-byte what it was and no job ran.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from tests.test_jobs_bad_input import tree_fingerprint
from tests.web_support import DUO_CHIPSET_GROUP, DUO_GPU, DUO_NVME_GROUP, make_user, signed_in
from tests.worker_support import requires_redis
from webui.jobs.models import Job, State

pytestmark = [requires_redis, pytest.mark.worker]

junk = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["0000:01:00.0\n", "../../../etc/passwd", "0000:01:00.0; reboot", "%00", "1e9"]),
)
form_values = st.dictionaries(
    st.sampled_from(
        [
            "confirm",
            "release_console",
            "method",
            "count",
            "devices",
            "target",
            "memory_mib",
            "vcpus",
            "rom_file",
            "extra",
            "step",
            "pick",
            "group",
        ]
    ),
    st.one_of(junk, st.integers().map(str)),
    max_size=6,
)


@pytest.fixture
def live_duo(start_worker, tmp_path):
    root = write_tree(realworld.asokolsky_duo(), tmp_path / "duo")
    start_worker(root, "duo")
    return root


def test_bad_input_to_the_views_is_refused_and_changes_nothing(live_duo):
    before = tree_fingerprint(live_duo)
    client = signed_in(make_user("fuzzy", "operator"))
    statuses: set[int] = set()

    def send(method: str, url: str, data: dict[str, str]) -> None:
        response = client.post(url, data) if method == "post" else client.get(url, data)
        assert response.status_code < 500, (url, data, response.status_code)
        statuses.add(response.status_code)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(address=junk, data=form_values)
    def device_actions(address, data):  # type: ignore[no-untyped-def]
        assume("/" not in address and address.strip() not in ("", DUO_GPU, DUO_GPU[5:]))
        quoted = address.replace("%", "%25").replace("?", "%3F").replace("#", "%23")
        for name in ("device", "reset_device", "set_vfs"):
            url = f"/hosts/duo/devices/{quoted}/" + {"device": "", "reset_device": "reset/", "set_vfs": "sriov/"}[name]
            send("get" if name == "device" else "post", url, data)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        group=st.one_of(
            st.integers(min_value=15, max_value=10**9), st.sampled_from([1, 6, 7, DUO_CHIPSET_GROUP, DUO_NVME_GROUP])
        ),
        data=form_values,
    )
    def bind_refused_groups(group, data):  # type: ignore[no-untyped-def]
        assume(data.get("confirm", "").strip() != "0000:05:00.0")  # the NVMe's real phrase would be a real request
        send("post", reverse("bind_group", kwargs={"host": "duo", "group": group}), data)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=form_values)
    def the_gpu_with_junk(data):  # type: ignore[no-untyped-def]
        method = data.get("method")
        assume(method not in (None, "", "flr", "bus"))  # the duo GPU lists no method: any method is refused
        send("post", reverse("reset_device", kwargs={"host": "duo", "address": DUO_GPU}), data)
        count = data.get("count")
        send("post", reverse("set_vfs", kwargs={"host": "duo", "address": DUO_GPU}), {"count": count or "3"})
        send("get", reverse("vmconfig", kwargs={"host": "duo"}), data)
        send("get", reverse("vmconfig_download", kwargs={"host": "duo"}), data)
        send("get", reverse("audit"), data)
        send("get", reverse("jobs"), data)

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(pk=st.integers(min_value=1, max_value=2**62), check=junk, data=form_values)
    def jobs_and_fixes(pk, check, data):  # type: ignore[no-untyped-def]
        send("post", reverse("job_undo", kwargs={"pk": pk}), data)
        send("post", reverse("job_give_back", kwargs={"pk": pk}), data)
        assume(
            check.strip()
            and "/" not in check
            and check not in ("iommu", "iommu_passthrough_mode", "interrupt_remapping")
        )
        send(
            "post",
            f"/hosts/duo/readiness/{check.replace('%', '%25').replace('?', '%3F').replace('#', '%23')}/apply/",
            data,
        )

    device_actions()
    bind_refused_groups()
    the_gpu_with_junk()
    jobs_and_fixes()

    assert statuses <= {200, 302, 400, 403, 404, 405}, statuses
    assert 404 in statuses and 302 in statuses  # refusals in words happened, on pages and redirects
    # Nothing reached the worker that could act: any job was refused or failed, and the tree is as it was.
    assert not Job.objects.filter(state=State.SUCCEEDED).exclude(action="scan").exists()
    assert tree_fingerprint(live_duo) == before
