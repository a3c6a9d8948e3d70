"""The Django project: settings, urls, the Celery app.

Importing the Celery app here makes it the current app whenever Django starts, so tasks
declared with ``@shared_task`` are sent through it (to REDIS_URL, JSON only).
"""

from webui.celery import app as celery_app

__all__ = ["celery_app"]
