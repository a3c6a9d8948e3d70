"""An attacker on the broker, run as a separate process (as ``nobody`` when the tests run as root).

It knows what anyone who reaches the broker knows: the URL (with the password, for the
cases where the broker itself is assumed compromised), the task names and the queue names.
It does not have the app's signing key: var/ is readable by its owner only. Usage:

    python tests/forger.py REDIS_URL QUEUE ACTION [ARG]

ACTION: ``ping`` (can it connect at all), ``shutdown``, ``revoke`` ARG (a task id, with
terminate), ``pool_shrink``, ``unsigned`` ARG (JSON task kwargs for passthrough.bind_vfio),
``foreign-key`` ARG (the same, signed by a key of its own), ``raw`` (a raw Redis envelope,
read from standard input, pushed as it is: a replay, or a tampered copy). Prints one JSON
line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def main() -> None:
    url, queue, action = sys.argv[1:4]
    argument = sys.argv[4] if len(sys.argv) > 4 else ""
    import redis

    if action == "ping":
        try:
            print(json.dumps({"connected": bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())}))
        except redis.RedisError as error:
            print(json.dumps({"connected": False, "error": str(error)}))
        return
    if action == "raw":
        redis.Redis.from_url(url).lpush(queue, sys.stdin.buffer.read())
        print(json.dumps({"sent": "raw"}))
        return

    from celery import Celery

    app = Celery("forger", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=False)
    if action == "shutdown":
        app.control.broadcast("shutdown")
    elif action == "revoke":
        app.control.revoke(argument, terminate=True, signal="SIGKILL")
    elif action == "pool_shrink":
        app.control.broadcast("pool_shrink", arguments={"n": 1})
    elif action == "unsigned":
        app.send_task("passthrough.bind_vfio", kwargs=json.loads(argument), queue=queue)
    elif action == "foreign-key":
        import importlib.util

        # The module alone, not the webui package: importing that would load the app's settings.
        path = Path(__file__).resolve().parent.parent / "webui" / "jobs" / "broker.py"
        spec = importlib.util.spec_from_file_location("forger_broker", path)
        assert spec is not None and spec.loader is not None
        broker = importlib.util.module_from_spec(spec)
        sys.modules["forger_broker"] = broker
        spec.loader.exec_module(broker)
        files = broker.SigningFiles(Path(tempfile.mkdtemp(prefix="forger-")))
        broker.generate(files)
        app.conf.update(
            task_serializer="auth",
            accept_content=["auth"],
            security_key=str(files.key),
            security_certificate=str(files.certificate),
            security_cert_store=str(files.trusted),
        )
        app.setup_security()
        app.send_task("passthrough.bind_vfio", kwargs=json.loads(argument), queue=queue)
    else:
        raise SystemExit(f"unknown action {action}")
    print(json.dumps({"sent": action}))


if __name__ == "__main__":
    main()
