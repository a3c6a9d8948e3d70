from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "webui.jobs"
    label = "jobs"
    verbose_name = "Privileged jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The worker's start-up duties and its udev watcher hang on Celery signals.
        from webui.jobs import worker  # noqa: F401
