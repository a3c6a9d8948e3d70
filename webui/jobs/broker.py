"""Trusting the broker as little as possible: who may reach it, and which messages count.

The broker (Redis) is shared ground: any process that can reach it can publish. So:

- **Authentication.** A broker URL without credentials is refused (the web app will not
  send to it, the worker will not consume from it) unless the operator opts in with
  ``PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER=true``, documented as unsafe. A Redis on a
  unix socket is reached through the socket file's permissions, so it counts as
  authenticated.
- **Signatures.** Task messages are signed with Celery's own message signing (the ``auth``
  serializer, RSA-PSS over SHA-256, the ``cryptography`` package), by the web app alone.
  Its key and a self-signed certificate are generated into ``var/broker/`` on first start,
  readable only by the user that runs the app; the certificate sits in ``trusted/``, so the
  worker of a single-host install, which shares that directory, trusts it. A host's worker
  elsewhere gets only the web app's certificate (deploy/worker-keys) and no key: it verifies
  messages and can sign none (``configure_signing``), and it sends a job again by publishing
  the message the web app stored with the job (:mod:`webui.jobs.signed`). The worker accepts
  ``auth`` content only, so an unsigned message, one signed by a key whose certificate is
  not in the trusted store, or one whose body was altered fails to decode and is refused
  (see :mod:`webui.jobs.consumer`). A signature covers the message body (the task's keyword
  arguments: the job, its host, when it was issued, its arguments), not its headers: the
  runner checks the task name, the host and every argument against the job row, and runs
  only a job that is still queued and not too old, so a replayed or re-addressed message
  runs nothing.
- **No remote control.** Celery's broadcast commands (``shutdown``, ``revoke``, ``pool_*``)
  travel unsigned on the pidbox channel: the worker does not listen to them at all, and
  it skips mingle (which takes revoked task ids from whoever answers) and gossip (whose
  elections can make a worker send a task).
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KEY_NAME = "signing.key"
CERT_NAME = "signing.crt"
TRUSTED_DIR = "trusted"
CERT_YEARS = 20


class BrokerRefused(RuntimeError):
    """The broker URL or the signing material is not safe to use; the message says what to do."""


def authentication_problem(url: str) -> str | None:
    """Why ``url`` reaches the broker without proving who we are, or None when it does."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+socket"):
        return None  # the socket file's permissions decide who connects
    if parts.scheme in ("redis", "rediss"):
        if parts.password:
            return None
        return (
            f"REDIS_URL ({parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}) carries no password, so any "
            "process that can reach that Redis could send this host's root worker jobs and stop it"
        )
    if parts.scheme == "memory":
        return None  # one process's own queue: nobody else can publish to it
    return f"{parts.scheme}:// brokers are not supported; use redis:// with a password"


def check_broker_url(url: str, allow_unauthenticated: bool) -> None:
    problem = authentication_problem(url)
    if problem and not allow_unauthenticated:
        raise BrokerRefused(
            f"{problem}. Unset REDIS_URL to let scripts/run start a private Redis with a password, or give "
            "REDIS_URL a password (redis://:PASSWORD@host:6379/0, or an ACL user redis://USER:PASSWORD@...). "
            "To accept an unauthenticated broker anyway (unsafe), set PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER=true."
        )


@dataclass(frozen=True)
class SigningFiles:
    """Where the signing key, its certificate and the trusted certificates live."""

    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / KEY_NAME

    @property
    def certificate(self) -> Path:
        return self.directory / TRUSTED_DIR / CERT_NAME

    @property
    def trusted(self) -> Path:
        return self.directory / TRUSTED_DIR

    def exist(self) -> bool:
        """A key to sign with and its certificate: the web app's directory (and a single-host install's)."""
        return self.key.is_file() and self.certificate.is_file()

    def trusts_any(self) -> bool:
        """At least one certificate to verify messages with: all a host's worker has."""
        return self.trusted.is_dir() and any(path.is_file() for path in self.trusted.iterdir())

    def missing(self) -> str:
        return (
            f"No message-signing key in {self.directory}: run scripts/run once (it generates one), or "
            f"`.venv/bin/python -c 'import sys; from webui.jobs.broker import generate_into; generate_into(sys.argv[1])' "
            f"{self.directory}` as the user that runs the app. A host's worker needs no key, only the web "
            f"app's certificate in {self.trusted}: deploy/worker-keys WEB_CERTIFICATE puts it there."
        )


def generate(files: SigningFiles) -> bool:
    """Write an RSA key (0600) and a self-signed certificate for it; False when they exist already."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if files.exist():
        return False
    files.trusted.mkdir(parents=True, exist_ok=True)
    os.chmod(files.directory, 0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Passthrough Wizard"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"job signer {os.uname().nodename}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return True


NO_KEY_HERE = (
    "This process holds no message-signing key (a host's worker verifies the web app's messages "
    "and signs none); jobs are signed by the web app when it saves them."
)


def configure_signing(app: object, files: SigningFiles) -> bool:
    """Sign and verify this app's task messages with ``files``; False when it can do neither.

    With a key (the web app; a single-host install's worker, which shares its directory):
    what Celery's ``setup_security`` registers, with the signer built at the first message
    signed (:class:`DeferredSigner`) and reading done by :func:`_verifier`. With trusted certificates and no key (a host's worker): verify
    only, with Celery's serializer and certificate store; signing is refused, saying why.
    With neither: an ``auth`` serializer that refuses to sign or read anything, saying why:
    a process that never sends a task (migrations, checks) starts as usual, and one that
    tries gets the reason rather than Celery's KeyError.
    """
    from kombu.serialization import registry

    if not files.exist():
        verifies = files.trusts_any()
        reason = NO_KEY_HERE if verifies else files.missing()

        def refuse(*args: object, **kwargs: object) -> None:
            raise BrokerRefused(reason)

        decode = _verifier(files) if verifies else refuse
        registry.register("auth", refuse, decode, content_type="application/data", content_encoding="utf-8")
        return verifies
    # What Celery's setup_security does, with the signer built at the first message signed.
    from celery.exceptions import ImproperlyConfigured

    conf = app.conf  # type: ignore[attr-defined]
    if conf.task_serializer != "auth" or conf.accept_content != ["auth"]:
        raise ImproperlyConfigured("task_serializer must be 'auth' and accept_content ['auth'] to sign messages")
    signer = DeferredSigner(files)  # _verifier disables every other decoder first
    registry.register(
        "auth", signer.serialize, _verifier(files), content_type="application/data", content_encoding="utf-8"
    )
    registry._set_default_serializer("auth")  # as setup_security does
    return True


class DeferredSigner:
    """Celery's SecureSerializer with the signing key (what its ``register_auth`` builds), made at
    the first message this process signs rather than when it starts.

    Reading and checking the 3072-bit RSA key took about 150 ms of every process's start: every
    ``manage.py`` command, each web and worker process (and seconds for each Python in the
    real-kernel guests, under emulation), though only the web app's job submissions sign.
    Reading a message needs no key: that is ``_verifier``'s, with the same certificate store.
    """

    def __init__(self, files: SigningFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._serializer: Any = None

    @property
    def loaded(self) -> bool:
        return self._serializer is not None

    def serialize(self, data: object) -> object:
        with self._lock:
            if self._serializer is None:
                from celery.security.certificate import Certificate, FSCertStore
                from celery.security.key import PrivateKey
                from celery.security.serialization import SecureSerializer

                self._serializer = SecureSerializer(
                    PrivateKey(self.files.key.read_text()),
                    Certificate(self.files.certificate.read_text()),
                    FSCertStore(str(self.files.trusted)),
                    digest="sha256",
                    serializer="json",
                )
        return self._serializer.serialize(data)


def _verifier(files: SigningFiles) -> Callable[[bytes], object]:
    """What Celery's setup_security registers, less the key it insists on: verify against ``trusted/`` only."""
    from celery.security.certificate import FSCertStore
    from celery.security.serialization import SecureSerializer
    from kombu.serialization import disable_insecure_serializers

    disable_insecure_serializers(allowed=None)  # no decoder but the auth serializer registered next
    verifier = SecureSerializer(cert_store=FSCertStore(str(files.trusted)), digest="sha256", serializer="json")
    return verifier.deserialize


def generate_into(directory: str) -> None:
    """What scripts/run calls on first start."""
    target = SigningFiles(Path(directory))
    if generate(target):
        print(f"Generated a message-signing key in {target.directory} (the worker runs only jobs signed with it).")
