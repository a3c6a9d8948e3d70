"""Starting the app: scripts/run (for real, in a copy of this tree), its demo database and
the apt step of scripts/_common.sh.

The copy shares this checkout's .venv through symlinks and a matching install stamp, so
scripts/run installs nothing; it gets its own var/, HOME and ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What a developer's shell may carry that would point the copy at another install.
FOREIGN = ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "AUDIT_KEY", "BROKER_SIGNING_DIR", "PORT", "BIND")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in FOREIGN
        and not key.startswith(("PASSTHROUGH_", "DJANGO_", "XDG_RUNTIME", "AUDIT_KEY", "SECRET_KEY", "PYTEST"))
    }
    return env | extra


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This working tree (tracked and new files, not var/ or .venv/) with .venv shared."""
    root = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    venv = root / ".venv"
    venv.mkdir()
    for part in ("bin", "lib"):
        (venv / part).symlink_to(REPO / ".venv" / part)
    shutil.copy2(REPO / ".venv" / "pyvenv.cfg", venv / "pyvenv.cfg")
    stamp = subprocess.run(
        "cat requirements.txt requirements.txt | sha256sum | cut -d' ' -f1",
        shell=True, cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (venv / ".installed-requirements.txt").write_text(stamp)
    return root


def _bash(clone: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source scripts/_common.sh\n{script}"],
        cwd=clone, env=_clean_env(**env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_apt_install_asks_for_no_recommends_and_shows_apts_progress(tmp_path, clone):
    # apt-get stood in for by a script that records its arguments and talks like apt.
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    (fake / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\necho "Get:1 http://deb.debian.org/debian bookworm/main amd64 fake-package [1 kB]"\n'
        'echo "Setting up fake-package ..."\n'
    )
    (fake / "apt-get").chmod(0o755)
    result = _bash(
        clone, "apt_install chromium redis-server; apt_install pciutils", PATH=f"{fake}:{os.environ['PATH']}"
    )
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "update -q",  # once, for both installs
        "install -y -q --no-install-recommends chromium redis-server",
        "install -y -q --no-install-recommends pciutils",
    ]
    assert result.stdout.count("Setting up fake-package ...") == 3  # apt's lines are shown, not sent to /dev/null


def test_the_demo_gets_a_database_of_its_own_unless_database_url_is_set(clone):
    own = _bash(clone, 'ensure_var 2>/dev/null && use_demo_tree onizuka-arc310 >/dev/null && echo "$DATABASE_URL"')
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == f"sqlite:///{clone}/var/demo/onizuka-arc310/db.sqlite3"
    given = _bash(
        clone, 'ensure_var 2>/dev/null && use_demo_tree onizuka-arc310 >/dev/null && echo "$DATABASE_URL"',
        DATABASE_URL="sqlite:////x",
    )  # fmt: skip
    assert given.stdout.strip() == "sqlite:////x"


def _get(url: str) -> tuple[int, str, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=5) as response:
            return response.status, response.headers.get("Location", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), ""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="scripts/run starts a private redis-server")
def test_scripts_run_demo_starts_answers_healthz_and_stops_cleanly(clone, tmp_path):
    home, port, redis_port = tmp_path / "home", _free_port(), _free_port()
    home.mkdir()
    log = tmp_path / "run.log"
    env = _clean_env(HOME=str(home), PORT=str(port), PRIVATE_REDIS_PORT=str(redis_port))
    with log.open("w") as output:
        run = subprocess.Popen(
            ["scripts/run", "--demo"],
            cwd=clone,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert run.poll() is None, log.read_text()
            try:
                status, _, body = _get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert '"ok": true' in body
        status, location, _ = _get(f"http://127.0.0.1:{port}/accounts/login/?next=/jobs/")
        assert (status, location) == (302, "/accounts/sign-in/?next=/jobs/")
        printed = log.read_text()
        # The demo's own database, with its own first admin, printed; the live one is not made.
        assert "Demo database: var/demo/asokolsky-duo/db.sqlite3" in printed
        assert "Created the first admin account." in printed and "    password: " in printed
        assert (clone / "var/demo/asokolsky-duo/db.sqlite3").exists() and not (clone / "var/db.sqlite3").exists()
        # No gunicorn control socket in the shared place another instance would take over.
        assert not (home / ".gunicorn").exists()
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C, as at the terminal
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            raise
    printed = log.read_text()
    assert "Stopping…" in printed and "Stopped the private Redis." in printed
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0  # the private Redis is gone too
