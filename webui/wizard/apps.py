from django.apps import AppConfig


class WizardConfig(AppConfig):
    """The pages a user sees: the setup wizard and the pages it links to."""

    name = "webui.wizard"
    label = "wizard"
    verbose_name = "Wizard and pages"
    default_auto_field = "django.db.models.BigAutoField"
