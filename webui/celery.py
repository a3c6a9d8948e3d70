"""The Celery app: ``celery -A webui worker -Q host.<name>``.

All configuration lives in webui/settings.py under the ``CELERY_`` prefix (JSON only,
late acknowledgement, one job at a time, time limits, the host's own queue), so the web
process that enqueues and the worker that runs agree by construction.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")

app = Celery("webui")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
