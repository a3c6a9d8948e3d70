"""A host's worker with the key material deploy/worker-keys gives it, and no more.

Its BROKER_SIGNING_DIR trusts one certificate, the web app's, and holds no key at all. It
runs the jobs the web app signs; it sends a queued job again (at its start) by publishing
the message the web app stored with the job, which it could not have signed; a process
with its directory cannot sign a job; and it drops a message for one of its jobs signed by
any other key (another host's, made by its root). deploy/worker-keys also takes away the
key and the trust an earlier version gave each host, and never touches the web app's own.
"""

from __future__ import annotations

import os
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
WEB = SigningFiles(Path(settings.BROKER_SIGNING_DIR))


def worker_keys(directory: Path, certificate: Path = WEB.certificate) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "SECRET_KEY_FILE")}
    command = [str(REPO / "deploy" / "worker-keys"), str(certificate), str(directory)]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def host_keys(directory: Path) -> Path:
    """What deploy/worker-keys leaves for a host's worker: the web app's certificate alone, no key."""
    done = worker_keys(directory)
    assert done.returncode == 0, done.stderr
    broker = directory / "broker"
    assert sorted(path.name for path in broker.rglob("*")) == ["trusted", "web.crt"]
    return broker


def in_process(signing_dir: Path, program: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Python with the app set up the way a process with ``signing_dir`` as its BROKER_SIGNING_DIR has it."""
    env = {
        **os.environ,
        "BROKER_SIGNING_DIR": str(signing_dir),
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url(),
        "PYTHONPATH": str(REPO),
    }
    setup = "import sys, django; django.setup(); "
    return subprocess.run(
        [sys.executable, "-c", setup + program, *arguments], cwd=REPO, env=env, capture_output=True, text=True
    )


def send_as_host(signing_dir: Path, job_id: int) -> None:
    """Root on another host (a key it made itself) signs and sends the message of a job that is not its host's."""
    program = (
        "from webui.jobs.models import Job; from webui.jobs.messages import task_arguments; "
        "from webui.jobs.tasks import TASKS; job = Job.objects.get(pk=int(sys.argv[1])); "
        "TASKS[job.action].apply_async(kwargs=task_arguments(job), queue=job.host.queue, task_id=job.task_id)"
    )
    done = in_process(signing_dir, program, str(job_id))
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_worker_with_the_web_apps_certificate_alone_runs_its_jobs_and_no_other_keys(start_worker, tmp_path):
    own = host_keys(tmp_path / "pve2")
    other = tmp_path / "pve3-broker"  # a key root on another host made, trusted by that host alone
    generate(SigningFiles(other))
    root = write_tree(gpu_host(), tmp_path / "pve2-host")

    # Saved (and signed by the web app) before the worker starts, never sent: the worker sends
    # its stored message at its start, and it runs, though the worker holds no key to sign one.
    host = Host.objects.create(name="pve2")
    waiting = create_job(host=host, action="scan", targets=[], user=operator_named("otto"), actor="otto")
    stored = waiting.signed_message
    worker = start_worker(root, "pve2", BROKER_SIGNING_DIR=str(own))
    assert wait_for_job(waiting).state == State.SUCCEEDED, waiting.message
    assert waiting.signed_message == stored
    assert "sent 1 queued job(s) again" in worker.log.read_text()

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


@pytest.mark.django_db(transaction=True)
def test_a_process_with_a_hosts_key_material_cannot_sign_a_job(tmp_path):
    own = host_keys(tmp_path / "pve2")
    Host.objects.create(name="pve2")
    program = (
        "from webui.hosts.models import Host; from webui.jobs.service import BrokerUnavailable, create_job\n"
        "try:\n"
        "    create_job(host=Host.objects.get(name='pve2'), action='scan', targets=[], actor='root on pve2')\n"
        "except BrokerUnavailable as error:\n"
        "    print(error)\n"
    )
    done = in_process(own, program)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "The job's message cannot be signed" in done.stdout and "holds no message-signing key" in done.stdout
    assert not Host.objects.get(name="pve2").jobs.exists(), "nothing is saved"


def test_worker_keys_takes_back_the_key_and_trust_an_earlier_version_gave_a_host(tmp_path):
    directory = tmp_path / "worker"
    legacy = SigningFiles(directory / "broker")
    generate(legacy)  # the old layout: a key of the host's own, its certificate in trusted/
    (legacy.trusted / "web.crt").write_bytes(WEB.certificate.read_bytes())
    (legacy.trusted / "extra.crt").write_bytes(legacy.certificate.read_bytes())

    done = worker_keys(directory)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in legacy.directory.rglob("*")) == ["trusted", "web.crt"]
    assert f"Removed {legacy.key}" in done.stderr and f"Removed {legacy.certificate}" in done.stderr
    assert f"Removed {legacy.trusted / 'extra.crt'}" in done.stderr


def test_worker_keys_refuses_the_web_apps_own_directory(tmp_path):
    web = SigningFiles(tmp_path / "web" / "broker")
    generate(web)
    done = worker_keys(tmp_path / "web", certificate=web.certificate)
    assert done.returncode == 2 and "holds the web app's own signing key" in done.stderr
    assert web.exist(), "the web app's key is where it was"
