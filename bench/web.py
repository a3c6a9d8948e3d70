"""Benchmark: the devices-and-groups page of a 1,024-function host, served by gunicorn.

In one run, on one server (gunicorn, 2 sync workers, DEBUG off, SQLite):
  * the groups page (/hosts/big/devices/) rendered by the normal view from a stored
    snapshot of the synthetic 1,024-function host (bench/synthetic.py), with a signed-in
    session (the bench signs in through the sign-in form, as a browser does);
  * /bench/hello, a hello-world view routed only when PASSTHROUGH_BENCH_HELLO is set, behind
    the same middleware (session, sign-in);
  * server time p50/p95 from gunicorn's access log (%(D)s: microseconds from request to
    response), requests per second seen by the client (2 connections at a time), and the
    ratio of the two pages' throughput. Targets: groups p95 <= 50 ms, throughput >= 0.3x hello.
  * the first request of each worker, which parses the snapshot and renders every group
    before caching them (later requests reuse them until a new snapshot), is reported apart.

Usage: .venv/bin/python bench/web.py [--requests N] [--port P] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

USER, PASSWORD = "bench", "bench-password-1024"
HOST_NAME = "big"
GROUPS = f"/hosts/{HOST_NAME}/devices/"
HELLO = "/bench/hello"


def server_env(workdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="webui.settings",
        DATABASE_URL=f"sqlite:///{workdir}/bench.sqlite3",
        SECRET_KEY="bench-only-secret-key-not-used-anywhere-else",
        DEBUG="false",
        SECURE_COOKIES="false",  # plain HTTP to 127.0.0.1 from a client that is not a browser
        ALLOWED_HOSTS="127.0.0.1",
        PASSTHROUGH_BENCH_HELLO="true",
        PASSTHROUGH_WATCH_UDEV="false",
        LOG_LEVEL="WARNING",
        PYTHONPATH=REPO,
    )
    return env


def prepare(workdir: str, env: dict[str, str]) -> None:
    """Migrate a fresh database and store the host's snapshot and a signed-up operator."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    script = f"""
import django
django.setup()
from bench.synthetic import build_synthetic_host
from passthrough.host import HostTree
from passthrough.hosttrees.tree import write_tree
from webui.accounts.roles import OPERATOR, set_role
from webui.hosts.models import Host
from webui.hosts.snapshots import take_snapshot
from django.contrib.auth import get_user_model
root = write_tree(build_synthetic_host(1024), {os.path.join(workdir, "tree")!r})
host = Host.objects.create(name={HOST_NAME!r}, root=str(root))
snapshot = take_snapshot(host, HostTree(str(root)), "startup")
user = get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})
set_role(user, OPERATOR)
print(len(snapshot.inventory["devices"]), "functions,", len(snapshot.inventory["groups"]), "groups")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    print(f"snapshot: {done.stdout.strip()}")


def decoded(body: bytes, headers: dict[str, str]) -> bytes:
    return gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body


class Session:
    """Cookies of one signed-in browser, over fresh connections (gunicorn's sync workers close them)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        # As a browser does: pages come compressed when they are worth it.
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), "Accept-Encoding": "gzip"}
        if body is not None:
            headers.update(
                {"Content-Type": "application/x-www-form-urlencoded", "Referer": f"http://127.0.0.1:{self.port}/"}
            )
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                for name, morsel in SimpleCookie(value).items():
                    self.cookies[name] = morsel.value
        connection.close()
        return response.status, data, dict(response.getheaders())

    def sign_in(self) -> None:
        status, page, headers = self.request("GET", "/accounts/sign-in/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', decoded(page, headers))
        if status != 200 or token is None:
            raise SystemExit(f"sign-in page answered {status}")
        form = urlencode({"csrfmiddlewaretoken": token.group(1).decode(), "username": USER, "password": PASSWORD})
        status, _, headers = self.request("POST", "/accounts/sign-in/", form)
        if status != 302 or "sessionid" not in self.cookies:
            raise SystemExit(f"signing in failed: {status} {headers.get('Location')}")


def wait_until_up(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            Session(port).request("GET", "/healthz")
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not answer")


def hammer(session: Session, path: str, count: int, clients: int = 2) -> tuple[float, int]:
    """``count`` GETs of ``path`` from ``clients`` threads; returns (seconds, bytes sent for one answer)."""
    sizes: list[int] = []
    failures: list[str] = []

    def run(share: int) -> None:
        for _ in range(share):
            status, body, _ = session.request("GET", path)
            if status != 200:
                failures.append(f"{path} answered {status}")
                return
            sizes.append(len(body))

    threads = [threading.Thread(target=run, args=(count // clients,)) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(failures[0])
    return elapsed, sizes[0]


def server_times(log: str, start: int, path: str) -> list[float]:
    """Milliseconds per request of ``path`` in the access log after byte ``start``."""
    with open(log, encoding="utf-8") as handle:
        handle.seek(start)
        lines = handle.read().splitlines()
    times = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == path and parts[1] == "200":
            times.append(int(parts[2]) / 1000)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per page per round (default 400)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both pages (default 2)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", help="work in this directory and keep it")
    args = parser.parse_args()

    workdir = args.keep or tempfile.mkdtemp(prefix="bench-web-")
    os.makedirs(workdir, exist_ok=True)
    env = server_env(workdir)
    log = os.path.join(workdir, "access.log")
    prepare(workdir, env)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webui.wsgi", "--workers", "2", "--no-control-socket", "--bind", f"127.0.0.1:{args.port}",
         "--access-logfile", log, "--access-logformat", "%(U)s %(s)s %(D)s", "--error-logfile", os.path.join(workdir, "error.log")],
        cwd=REPO, env=env,
    )  # fmt: skip
    try:
        wait_until_up(args.port, server)
        session = Session(args.port)
        session.sign_in()
        _, body, headers = session.request("GET", GROUPS)
        html_bytes = len(decoded(body, headers))

        # The first requests: each worker loads the snapshot and renders every group once.
        start = os.path.getsize(log)
        hammer(session, GROUPS, 8)
        hammer(session, HELLO, 8)
        time.sleep(0.3)
        cold = server_times(log, start, GROUPS)

        groups_ms: list[float] = []
        hello_ms: list[float] = []
        groups_seconds = hello_seconds = 0.0
        size = 0
        for _ in range(args.rounds):
            start = os.path.getsize(log)
            seconds, size = hammer(session, GROUPS, args.requests)
            groups_seconds += seconds
            seconds, _ = hammer(session, HELLO, args.requests)
            hello_seconds += seconds
            time.sleep(0.3)  # gunicorn writes the log line after the response
            groups_ms += server_times(log, start, GROUPS)
            hello_ms += server_times(log, start, HELLO)
    finally:
        server.terminate()
        server.wait(timeout=20)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    total = args.requests * args.rounds
    groups_rps = total / groups_seconds
    hello_rps = total / hello_seconds
    print(f"server: gunicorn, 2 sync workers; client: 2 connections at a time; {total} requests per page")
    print(f"groups page {GROUPS}: {html_bytes} bytes of HTML, {size} bytes sent (gzip)")
    print(f"  first requests (snapshot parsed, every group rendered): {max(cold):.1f} ms server time at most")
    print(f"  server time  p50 {statistics.median(groups_ms):6.1f} ms   p95 {percentile(groups_ms, 0.95):6.1f} ms"
          "   (target p95 <= 50 ms)")  # fmt: skip
    print(f"  throughput   {groups_rps:6.1f} requests/s")
    print(f"hello {HELLO}:")
    print(f"  server time  p50 {statistics.median(hello_ms):6.1f} ms   p95 {percentile(hello_ms, 0.95):6.1f} ms")
    print(f"  throughput   {hello_rps:6.1f} requests/s")
    print(f"groups / hello throughput: {groups_rps / hello_rps:.2f}x   (target >= 0.3x)")


if __name__ == "__main__":
    main()
