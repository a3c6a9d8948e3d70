"""Settings come from the environment, read by small typed helpers."""

import re
import runpy
import shutil
import socket
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webui import settings

REPO = Path(__file__).resolve().parent.parent
SETTINGS_VARIABLES = (
    "SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "PASSTHROUGH_ROOT",
    "PASSTHROUGH_HOSTNAME", "CSRF_TRUSTED_ORIGINS", "SECURE_COOKIES",
)  # fmt: skip


@pytest.fixture
def load_settings(tmp_path, monkeypatch):
    """Evaluate a copy of webui/settings.py in a fresh checkout-like directory with only ``env`` set."""
    (tmp_path / "webui").mkdir()
    shutil.copy(REPO / "webui" / "settings.py", tmp_path / "webui" / "settings.py")

    def load(**env: str) -> dict:
        for name in SETTINGS_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(tmp_path / "webui" / "settings.py"))

    return load


@pytest.mark.parametrize("text", ["1", "true", "True", "yes", "on", " TRUE "])
def test_envbool_reads_true(text, monkeypatch):
    monkeypatch.setenv("FLAG", text)
    assert settings.envbool("FLAG", "false") is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", ""])
def test_envbool_reads_false(text, monkeypatch):
    monkeypatch.setenv("FLAG", text)
    assert settings.envbool("FLAG", "true") is False


def test_envbool_refuses_a_value_that_is_not_a_boolean(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        settings.envbool("DEBUG", "false")


def test_envbool_and_envint_use_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("UNSET_FLAG", raising=False)
    assert settings.envbool("UNSET_FLAG", "true") is True
    assert settings.envint("UNSET_FLAG", "7") == 7


def test_envint_refuses_a_value_that_is_not_a_number(monkeypatch):
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "3m")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        settings.envint("CELERY_TASK_TIME_LIMIT", "180")


def test_envsecret_reads_the_file_named_by_the_file_variable(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("API_TOKEN_FILE", str(secret))
    assert settings.envsecret("API_TOKEN") == "from-a-file"
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    assert settings.envsecret("API_TOKEN") == "from-the-environment"


def test_envsecret_says_which_file_it_could_not_read(tmp_path, monkeypatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="API_TOKEN_FILE=.*missing cannot be read"):
        settings.envsecret("API_TOKEN")


def test_debug_is_off_by_default_and_cookies_are_secure(load_settings):
    loaded = load_settings(SECRET_KEY="k")
    assert loaded["DEBUG"] is False
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["CSRF_COOKIE_SECURE"] is True


def test_without_debug_a_secret_key_is_required(load_settings):
    with pytest.raises(ImproperlyConfigured, match="No SECRET_KEY: set SECRET_KEY or SECRET_KEY_FILE"):
        load_settings()


def test_the_secret_key_written_by_scripts_run_is_used(load_settings, tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("generated-on-first-start\n")
    assert load_settings()["SECRET_KEY"] == "generated-on-first-start"


def test_debug_runs_without_a_secret_key(load_settings):
    loaded = load_settings(DEBUG="true")
    assert loaded["SECRET_KEY"]
    assert loaded["SESSION_COOKIE_SECURE"] is False


def test_sqlite_in_var_is_the_default_database(load_settings, tmp_path):
    database = load_settings(SECRET_KEY="k")["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(tmp_path / "var" / "db.sqlite3")


def test_a_postgres_database_url_is_parsed_into_its_parts(load_settings):
    loaded = load_settings(SECRET_KEY="k", DATABASE_URL="postgres://wizard:s%40cret@db.lan:5433/passthrough")
    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["USER"], database["PASSWORD"]) == ("wizard", "s@cret")
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("db.lan", 5433, "passthrough")


def test_lists_are_comma_separated(load_settings):
    loaded = load_settings(
        SECRET_KEY="k", ALLOWED_HOSTS="pve1.lan, 192.0.2.10", CSRF_TRUSTED_ORIGINS="https://pve1.lan:8443"
    )
    assert loaded["ALLOWED_HOSTS"] == ["pve1.lan", "192.0.2.10"]
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["https://pve1.lan:8443"]


def test_the_worker_queue_is_named_after_the_host(load_settings):
    loaded = load_settings(SECRET_KEY="k", PASSTHROUGH_HOSTNAME="pve1", REDIS_URL="redis://broker.lan:6379/2")
    assert loaded["CELERY_TASK_DEFAULT_QUEUE"] == "host.pve1"
    assert loaded["CELERY_BROKER_URL"] == "redis://broker.lan:6379/2"


def test_the_hostname_defaults_to_this_machine(load_settings):
    assert load_settings(SECRET_KEY="k")["PASSTHROUGH_HOSTNAME"] == socket.gethostname()


def test_the_celery_app_accepts_only_signed_json_and_takes_one_job_at_a_time():
    from webui.celery import app

    conf = app.conf
    # "auth" is Celery's signing serializer around JSON (webui/jobs/broker.py); pickle never crosses.
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == ("auth", "json", ["auth"])
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert conf.task_default_queue == f"host.{settings.PASSTHROUGH_HOSTNAME}"
    assert conf.broker_url == settings.REDIS_URL


def test_htmx_is_served_without_debug(client):
    response = client.get("/static/vendor/htmx.min.js")
    assert response.status_code == 200
    assert b"htmx" in b"".join(response.streaming_content)[:200]


def test_the_base_template_loads_htmx_and_sends_the_csrf_token_with_every_htmx_request(rf):
    from django.template.loader import render_to_string

    html = render_to_string("base.html", request=rf.get("/"))
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in html
    # A masked token: 64 characters, different on every render.
    assert re.search(r"""<body hx-headers='\{"X-CSRFToken": "[A-Za-z0-9]{64}"\}'>""", html)
