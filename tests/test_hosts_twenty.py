"""The 20-host scenario, in CI: bench/hosts.py with 20 real workers on this machine.

Each worker has its own host tree, host name and queue; one "Refresh every host" must
store all 20 snapshots, each scanned by its own host's worker on its own tree (the bench
checks the process every job ran in), and bind jobs must run with 1 and with 20 workers
connected. The figures vary with the machine and what else runs on it, so they are kept in
test-artifacts/bench-hosts.txt, not asserted; `.venv/bin/python bench/hosts.py` prints them
for the default 60 jobs and 3 clicks. The workers run with --pool solo here: half the
memory of prefork (one process each), which CI machines may not have to spare.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.worker_support import REPO, requires_redis

pytestmark = [requires_redis, pytest.mark.worker, pytest.mark.slow]


def test_twenty_workers_refresh_every_host_with_one_click_each_on_its_own_queue():
    command = [sys.executable, "bench/hosts.py", "--hosts", "20", "--jobs", "10", "--rounds", "2", "--pool", "solo"]
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "bench-hosts.txt").write_text(output)
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"^refresh 20 hosts: \d+\.\d\d s", done.stdout, re.M), done.stdout
    assert re.search(r"^job overhead at 20 hosts / 1 host: \d+\.\d\dx", done.stdout, re.M), done.stdout
    assert "19 workers started in" in done.stdout
