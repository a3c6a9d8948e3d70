"""A host's worker with the key material deploy/worker-keys gives it, and no more.

Its BROKER_SIGNING_DIR holds a key of its own and trusts two certificates: its own and the
web app's. It does not have the web app's signing key. It runs the jobs the web app signs,
it sends its own queued jobs again (signed with its own key) when it starts, and it drops a
message for one of its jobs signed by another host's key: a worker on one host cannot
drive another host's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.worker_support import REPO, database_url, operator_named, redis_url, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, RefusalBurst
from webui.hosts.models import Host
from webui.jobs.broker import SigningFiles, generate
from webui.jobs.models import State
from webui.jobs.service import create_job, submit

pytestmark = [requires_redis, pytest.mark.worker]
BIND = {"release_console": False}


def host_keys(directory: Path) -> Path:
    """What deploy/worker-keys leaves in BROKER_SIGNING_DIR: an own key, its certificate, the web app's."""
    generate(SigningFiles(directory))
    web = SigningFiles(Path(settings.BROKER_SIGNING_DIR))
    shutil.copyfile(web.certificate, directory / "trusted" / "web.crt")
    return directory


def send_as_host(signing_dir: Path, job_id: int) -> None:
    """Another host's process (its own signing key) sends the message of a job that is not its own."""
    program = (
        "import sys, django; django.setup(); "
        "from webui.jobs.models import Job; from webui.jobs.messages import task_arguments; "
        "from webui.jobs.tasks import TASKS; job = Job.objects.get(pk=int(sys.argv[1])); "
        "TASKS[job.action].apply_async(kwargs=task_arguments(job), queue=job.host.queue, task_id=job.task_id)"
    )
    env = {
        **os.environ,
        "BROKER_SIGNING_DIR": str(signing_dir),
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url(),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run([sys.executable, "-c", program, str(job_id)], cwd=REPO, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_a_worker_with_its_own_key_runs_the_web_apps_jobs_and_no_other_hosts(start_worker, tmp_path):
    own = host_keys(tmp_path / "pve2-broker")
    assert (own / "signing.key").read_bytes() != SigningFiles(Path(settings.BROKER_SIGNING_DIR)).key.read_bytes()
    other = host_keys(tmp_path / "pve3-broker")  # another host's, trusted by pve3 alone
    root = write_tree(gpu_host(), tmp_path / "pve2")

    # Queued before the worker starts and never sent: the worker sends it again, signed with its own key.
    host = Host.objects.create(name="pve2")
    waiting = create_job(host=host, action="scan", targets=[], user=operator_named("otto"), actor="otto")
    start_worker(root, "pve2", BROKER_SIGNING_DIR=str(own))
    assert wait_for_job(waiting).state == State.SUCCEEDED, waiting.message

    signed_by_web = wait_for_job(
        submit(host=host, action="bind_vfio", targets=["0000:01:00.0"], parameters=BIND, user=operator_named("otto"))
    )
    assert signed_by_web.state == State.SUCCEEDED, signed_by_web.message

    foreign = create_job(
        host=host, action="restore_driver", targets=["0000:01:00.0"], user=operator_named("otto"), actor="otto"
    )
    send_as_host(other, foreign.pk)
    deadline = time.time() + 20
    while not RefusalBurst.objects.filter(host="pve2").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert RefusalBurst.objects.get(host="pve2").count == 1
    refusal = AuditEvent.objects.get(host="pve2", result="refused")
    assert "not signed by a trusted key" in refusal.error, refusal.error
    foreign.refresh_from_db()
    assert foreign.state == State.QUEUED and scan(root).device("0000:01:00.0").driver == "vfio-pci"
