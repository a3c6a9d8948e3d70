"""The Celery app: ``celery -A webui worker -Q host.<name>``.

All configuration lives in webui/settings.py under the ``CELERY_`` prefix (signed JSON
only, no remote control, late acknowledgement, one job at a time, time limits, the host's
own queue), so the web process that enqueues and the worker that runs agree by
construction. Message signing is set up here from the key in ``BROKER_SIGNING_DIR``; a
process without it can still import the app (``manage.py check``, migrations) but cannot
send a task, and a worker without it does not start (webui/jobs/consumer.py).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")

app = Celery("webui")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _setup_signing() -> bool:
    from django.conf import settings

    from webui.jobs.broker import SigningFiles, configure_signing

    return configure_signing(app, SigningFiles(settings.BROKER_SIGNING_DIR))


SIGNING_READY = _setup_signing()
