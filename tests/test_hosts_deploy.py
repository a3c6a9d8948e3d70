"""deploy/: the systemd units, the environment file examples, and deploy/worker-keys."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.worker_support import REPO

DEPLOY = REPO / "deploy"
UNITS = ("passthrough-web.service", "passthrough-worker.service")


def unit(name: str) -> dict[str, str]:
    """The unit's settings, section.Key -> value (the last one wins, as systemd's do for these keys)."""
    values, section = {}, ""
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[f"{section}.{key}"] = value
    return values


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian's systemd)")
def test_the_units_pass_systemd_analyze_verify_without_a_warning(tmp_path):
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/passthrough-wizard", str(REPO))
        (tmp_path / name).write_text(text.replace("/etc/passthrough-wizard/", f"{tmp_path}/"))
    (tmp_path / "web.env").touch()
    (tmp_path / "worker.env").touch()
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_web_app_runs_unprivileged_and_the_worker_as_root_on_no_queue_but_its_own():
    web, worker = unit("passthrough-web.service"), unit("passthrough-worker.service")
    assert web["Service.User"] == "passthrough" and web["Service.CapabilityBoundingSet"] == ""
    assert web["Service.ExecStart"].split()[0].endswith("/.venv/bin/gunicorn")
    assert worker["Service.User"] == "root"
    command = shlex.split(worker["Service.ExecStart"])
    assert command[1:5] == ["-A", "webui", "worker", "--concurrency"] and command[5] == "1"
    assert not {"-Q", "--queues", "-X", "--exclude-queues", "--pool"} & set(command)


def test_the_worker_the_unit_starts_consumes_only_its_hosts_queue(tmp_path):
    """The unit gives no -Q: the app's one queue is host.<PASSTHROUGH_HOSTNAME>."""
    program = "from webui.celery import app; print(sorted(app.amqp.queues))"
    env = {**os.environ, "PASSTHROUGH_HOSTNAME": "pve7", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['host.pve7']"


def _settings_read() -> set[str]:
    source = (REPO / "webui" / "settings.py").read_text()
    names = set(re.findall(r'env(?:str|bool|int|list|secret)\(\s*"([A-Z_]+)"', source))
    return names | {f"{name}_FILE" for name in re.findall(r'envsecret\(\s*"([A-Z_]+)"', source)}


@pytest.mark.parametrize("example", ["web.env.example", "worker.env.example"])
def test_every_variable_in_the_examples_is_a_setting_the_app_reads(example):
    variables = re.findall(r"^#?([A-Z][A-Z_]+)=", (DEPLOY / example).read_text(), re.M)
    assert variables
    unknown = set(variables) - _settings_read() - {"BIND"}  # BIND: the unit's gunicorn address
    assert not unknown, f"{example} sets what the app never reads: {sorted(unknown)}"


def test_a_worker_is_told_to_keep_its_own_secret_key_never_the_web_apps_and_no_message_key():
    text = (DEPLOY / "worker.env.example").read_text()
    assert "SECRET_KEY=" not in text.replace("SECRET_KEY_FILE=", "")
    assert "No message key (none is generated here, none ever copied)" in text


def _run(script: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "SECRET_KEY_FILE")}
    return subprocess.run(
        [str(DEPLOY / script), *map(str, arguments)], capture_output=True, text=True, env=env, check=False
    )


def _worker_keys(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return _run("worker-keys", *arguments)


def _web_certificate(tmp_path: Path) -> Path:
    done = _run("web-keys", tmp_path / "web")
    assert done.returncode == 0, done.stderr
    return tmp_path / "web" / "broker" / "trusted" / "signing.crt"


def test_web_keys_writes_the_web_apps_secrets_for_its_user_alone_once(tmp_path):
    web = tmp_path / "web"
    assert _run("web-keys", web).returncode == 0
    files = [web / "secret_key", web / "audit_key", web / "broker" / "signing.key"]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size > 40 for path in files)
    assert stat.S_IMODE(web.stat().st_mode) == 0o700 and (web / "broker/trusted/signing.crt").is_file()
    assert (web / "secret_key").read_text() != (web / "audit_key").read_text()
    before = [path.read_bytes() for path in files]
    assert _run("web-keys", web).returncode == 0
    assert [path.read_bytes() for path in files] == before
    assert _run("web-keys", web, "extra").returncode == 2


def test_worker_keys_trusts_the_web_apps_certificate_alone_and_makes_no_message_key(tmp_path):
    certificate, target = _web_certificate(tmp_path), tmp_path / "etc"
    done = _worker_keys(certificate, target)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "broker").stat().st_mode) == 0o700
    assert [path.name for path in (target / "broker/trusted").iterdir()] == ["web.crt"]
    assert (target / "broker/trusted/web.crt").read_bytes() == certificate.read_bytes()
    assert not (target / "broker" / "signing.key").exists()
    assert stat.S_IMODE((target / "secret_key").stat().st_mode) == 0o600
    assert "Still missing: " in done.stderr and "audit_key" in done.stderr
    before = (target / "secret_key").read_bytes()
    (target / "audit_key").write_text("copied\n")
    again = _worker_keys(certificate, target)
    assert again.returncode == 0 and "Still missing" not in again.stderr, again.stderr
    assert (target / "secret_key").read_bytes() == before, "a second run keeps what exists"


def test_worker_keys_refuses_what_is_not_a_certificate_and_writes_nothing(tmp_path):
    wrong = tmp_path / "signing.key"
    wrong.write_text("-----BEGIN PRIVATE KEY-----\nnot this\n-----END PRIVATE KEY-----\n")
    done = _worker_keys(wrong, tmp_path / "etc")
    assert done.returncode == 2 and "is not the web app's certificate" in done.stderr
    assert not (tmp_path / "etc").exists()
    assert _worker_keys().returncode == 2
