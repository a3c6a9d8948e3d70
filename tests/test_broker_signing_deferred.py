"""The signing key is read at the first message a process signs, not when the process starts.

Reading and checking the 3072-bit RSA key took about 150 ms of every process's start (each
``manage.py`` command, web and worker process), though only job submissions sign. Each check
runs in a fresh Python: the ``auth`` serializer is registered process-wide, and this test
process's own must stay the one the other tests' workers trust.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from pathlib import Path
from celery import Celery
from kombu.serialization import dumps, loads, registry
from webui.jobs.broker import DeferredSigner, SigningFiles, configure_signing, generate

files = SigningFiles(Path(sys.argv[1]))
generate(files)
if sys.argv[2] == "break-key":
    files.key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
app = Celery("probe", set_as_current=False)
app.conf.update(task_serializer="auth", accept_content=["auth"], result_serializer="json")
ready = configure_signing(app, files)
signer = registry._encoders["auth"].encoder.__self__
out = {"ready": ready, "deferred": isinstance(signer, DeferredSigner), "loaded_at_start": signer.loaded}
try:
    content_type, encoding, payload = dumps({"job_id": 7}, serializer="auth")
except Exception as error:
    out["sign_error"] = f"{type(error).__name__}: {error}"
else:
    out["loaded_after_sign"] = signer.loaded
    out["read_back"] = loads(payload, content_type, encoding, accept=["application/data"])
    tampered = payload.replace('7', '8', 1) if isinstance(payload, str) else payload
    try:
        loads(tampered.replace(tampered[40], "A" if tampered[40] != "A" else "B", 1), content_type, encoding, accept=["application/data"])
        out["tampered"] = "accepted"
    except Exception as error:
        out["tampered"] = type(error).__name__
print(json.dumps(out))
"""


def probe(tmp_path: Path, mode: str) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webui.settings", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "broker"), mode],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_key_is_read_at_the_first_signature_and_messages_still_sign_and_verify(tmp_path: Path) -> None:
    out = probe(tmp_path, "good")
    assert out["ready"] is True and out["deferred"] is True
    assert out["loaded_at_start"] is False
    assert out["loaded_after_sign"] is True
    assert out["read_back"] == {"job_id": 7}
    assert out["tampered"] != "accepted"


def test_a_broken_key_fails_the_first_signature_with_celerys_own_words(tmp_path: Path) -> None:
    out = probe(tmp_path, "break-key")
    assert out["loaded_at_start"] is False
    assert "private key" in out["sign_error"].lower(), out
