"""Settings, all from the environment (see the README's "Configuration" table).

Each value is read through a tiny typed helper so a typo in a variable name gives the
default rather than a crash, and a malformed value gives a clear error at start-up.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false.")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str) -> str | None:
    """``NAME`` itself, else the content of the file named by ``NAME_FILE`` (Docker/systemd credentials)."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as error:
        raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {error.strerror}.") from None


DEBUG = envbool("DEBUG", "false")


def _secret_key() -> str:
    key = envsecret("SECRET_KEY")
    if key:
        return key
    # scripts/run writes this file on first start, so a plain install needs no configuration.
    generated = VAR_DIR / "secret_key"
    if generated.is_file():
        key = generated.read_text().strip()
        if key:
            return key
    if DEBUG:
        return "insecure-development-key-only-used-with-DEBUG"
    raise ImproperlyConfigured(
        f"No SECRET_KEY: set SECRET_KEY or SECRET_KEY_FILE, or run scripts/run once, which writes {generated}."
    )


SECRET_KEY = _secret_key()


def _audit_key() -> str | None:
    """The audit chain's HMAC key: AUDIT_KEY(_FILE), else var/audit_key (scripts/run writes it).

    A file of its own, not a database row: whoever can rewrite the database cannot
    recompute the chain without it. Missing, audit writes stop with a message saying so.
    """
    key = envsecret("AUDIT_KEY")
    if key:
        return key
    generated = VAR_DIR / "audit_key"
    if generated.is_file():
        return generated.read_text().strip() or None
    return "insecure-development-audit-key-only-used-with-DEBUG" if DEBUG else None


AUDIT_KEY = _audit_key()
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# Secure cookies travel over HTTPS only. Browsers treat http://localhost as secure, so the
# default bind (127.0.0.1:8000) works; serve other addresses over TLS or set SECURE_COOKIES=false.
SECURE_COOKIES = envbool("SECURE_COOKIES", "false" if DEBUG else "true")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True

# The host this process runs on, and the directory its hardware is read from: "/" on a
# real host, a captured tree for demos and bug reports.
PASSTHROUGH_ROOT = envstr("PASSTHROUGH_ROOT", "/")
PASSTHROUGH_HOSTNAME = envstr("PASSTHROUGH_HOSTNAME", "") or socket.gethostname()
# "live": the worker writes the kernel's files under PASSTHROUGH_ROOT. "double": the kernel
# double answers those writes on a tree (the demo, the tests); it refuses the live "/".
PASSTHROUGH_KERNEL = envstr("PASSTHROUGH_KERNEL", "live")
if PASSTHROUGH_KERNEL not in ("live", "double"):
    raise ImproperlyConfigured(f"PASSTHROUGH_KERNEL={PASSTHROUGH_KERNEL!r}: use live or double.")
# Where the worker reads and changes VMs. PASSTHROUGH_LIBVIRT_URI unset: qemu:///system on the
# live host, not read on a captured tree; "none" turns libvirt off. PASSTHROUGH_QMP_SOCKETS:
# monitors of plain QEMU VMs besides those found in /proc (comma-separated paths).
PASSTHROUGH_LIBVIRT_URI = envstr("PASSTHROUGH_LIBVIRT_URI", "")
PASSTHROUGH_QMP_SOCKETS = tuple(
    path.strip() for path in envstr("PASSTHROUGH_QMP_SOCKETS", "").split(",") if path.strip()
)
# Watch the kernel's PCI events (pyudev) on the live host and refresh the snapshot after them.
PASSTHROUGH_WATCH_UDEV = envbool("PASSTHROUGH_WATCH_UDEV", "true")
# The real-world machine a demo runs on (scripts/run --demo sets it); pages show a "Demo" badge.
PASSTHROUGH_DEMO = envstr("PASSTHROUGH_DEMO", "")
# Routes /bench/hello for bench/web.py, which compares the groups page with it; off otherwise.
PASSTHROUGH_BENCH_HELLO = envbool("PASSTHROUGH_BENCH_HELLO", "false")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "axes",
    "webui.hosts",
    "webui.jobs",
    "webui.audit",
    "webui.accounts",
    "webui.wizard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webui.accounts.middleware.ContentSecurityPolicyMiddleware",
    # Pages of a big host are mostly repeated markup: the groups page of 1,024 functions is
    # ~780 kB of HTML and ~30 kB compressed. (WhiteNoise below compresses static files itself.)
    "django.middleware.gzip.GZipMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Signs out after SESSION_IDLE_MINUTES without a request (htmx polls do not count).
    "webui.accounts.middleware.IdleTimeoutMiddleware",
    # Every page needs a signed-in user; the sign-in page and /healthz opt out.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "webui.accounts.middleware.PasswordChangeRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a sign-in that reached the limit into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webui.urls"
WSGI_APPLICATION = "webui.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webui.wizard.context.header",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=600, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker write from different processes: WAL lets readers go on while one writes,
    # BEGIN IMMEDIATE takes the write lock up front (the audit chain relies on it) and the
    # timeout waits for it rather than failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: tests start real worker processes that must see the same database.
    # One per test run (by process id), so two runs at once do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "accounts:sign_in"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:sign_in"
CSRF_FAILURE_VIEW = "webui.wizard.views.errors.csrf_failure"

# Sign-in throttle (django-axes; the count is kept in the database, so every gunicorn worker
# sees it): SIGN_IN_FAILURE_LIMIT failed sign-ins for one account, or from one client address,
# each within SIGN_IN_LOCKOUT_MINUTES of the one before, lock it until that long after the last
# of them. The sign-in page then answers 429 with the wait in words (webui/accounts/throttle.py).
SIGN_IN_FAILURE_LIMIT = envint("SIGN_IN_FAILURE_LIMIT", "10")
SIGN_IN_LOCKOUT_MINUTES = envint("SIGN_IN_LOCKOUT_MINUTES", "15")
# The client's address is REMOTE_ADDR. Behind a reverse proxy every client has the proxy's
# address; set this to take the last X-Forwarded-For entry (the one the proxy appends) instead.
# Never without such a proxy: a client could then name any address it likes.
TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", "false")
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out sign-in before the next checks it
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = SIGN_IN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=SIGN_IN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own: per account, and per address
AXES_CLIENT_IP_CALLABLE = "webui.accounts.throttle.client_address"
AXES_LOCKOUT_CALLABLE = "webui.accounts.throttle.lockout_response"
# Attempts while locked are refused uncounted, so the wait a locked-out user is told holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Sign-ins and sign-outs are in the audit log; axes' own log of them would be a second copy.
AXES_DISABLE_ACCESS_LOG = True

# A session that made no request but htmx polls for this long is signed out.
SESSION_IDLE_MINUTES = envint("SESSION_IDLE_MINUTES", "30")
if SESSION_IDLE_MINUTES < 1 or SIGN_IN_FAILURE_LIMIT < 1 or SIGN_IN_LOCKOUT_MINUTES < 1:
    raise ImproperlyConfigured(
        "SESSION_IDLE_MINUTES, SIGN_IN_FAILURE_LIMIT and SIGN_IN_LOCKOUT_MINUTES must each be 1 or more."
    )

# On every response (webui/accounts/middleware.py). Scripts and styles are static files only:
# the templates have no inline script, style or event handler, and must keep it that way.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves straight from static/ through the finders: no STATIC_ROOT, no
# collectstatic step to forget on a host that runs from its git checkout.
WHITENOISE_USE_FINDERS = True

REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")

# The broker must make its clients authenticate (a password in REDIS_URL, or a unix
# socket); an open one is refused by the web app and the worker unless this says otherwise.
# Unsafe: any process that reaches such a Redis can stop the worker or flood its queue.
PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER = envbool("PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER", "false")
# The key that signs task messages and the certificates a worker trusts (webui/jobs/broker.py);
# scripts/run generates them into var/broker on first start.
BROKER_SIGNING_DIR = Path(envstr("BROKER_SIGNING_DIR", str(VAR_DIR / "broker")))
# A queued job older than this is not run: it ends "expired" with the reason.
PASSTHROUGH_JOB_MAX_WAIT = envint("PASSTHROUGH_JOB_MAX_WAIT", "600")
# Every worker says it is alive this often (seconds); a host whose worker has not been heard
# from for longer than PASSTHROUGH_OFFLINE_AFTER (default three beats) is shown "offline".
PASSTHROUGH_HEARTBEAT_SECONDS = envint("PASSTHROUGH_HEARTBEAT_SECONDS", "30")
PASSTHROUGH_OFFLINE_AFTER = envint("PASSTHROUGH_OFFLINE_AFTER", str(3 * PASSTHROUGH_HEARTBEAT_SECONDS))
if PASSTHROUGH_HEARTBEAT_SECONDS < 1 or PASSTHROUGH_OFFLINE_AFTER <= PASSTHROUGH_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "PASSTHROUGH_HEARTBEAT_SECONDS must be 1 or more, and PASSTHROUGH_OFFLINE_AFTER longer than it "
        "(a host would be called offline between two of its beats)."
    )

# Celery, read by webui/celery.py through the CELERY_ namespace. The broker is not trusted
# to be private: task messages are signed (the "auth" serializer wraps JSON, never pickle),
# and the worker accepts nothing else.
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "auth"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["auth"]
CELERY_SECURITY_DIGEST = "sha256"
# Broadcast commands (shutdown, revoke, pool changes) are not signed: the worker ignores them.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Audits refused messages and runs without mingle and gossip (webui/jobs/consumer.py).
CELERY_WORKER_CONSUMER = "webui.jobs.consumer:GuardedConsumer"
# Each host's worker consumes only its own queue; a privileged job must run on the host it changes.
CELERY_TASK_DEFAULT_QUEUE = f"host.{PASSTHROUGH_HOSTNAME}"
# A job is acknowledged when it has finished, and a worker takes one job at a time, so a
# worker that dies mid-job leaves the job queued rather than lost.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", "120")
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "180")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": envstr("LOG_LEVEL", "INFO")},
    # qemu.qmp logs every refused connection at ERROR; the VM readers report a monitor that does
    # not answer themselves (the VM reads as "unknown", with the reason), once per snapshot.
    "loggers": {"qemu.qmp": {"level": "CRITICAL"}},
}
