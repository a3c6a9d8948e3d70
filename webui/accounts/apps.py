from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    """Sign-in, the two roles (viewer and operator) and the first admin account."""

    name = "webui.accounts"
    label = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from webui.accounts import middleware, roles

        # After every migrate, so a fresh database has both roles before anyone signs in.
        post_migrate.connect(roles.ensure_roles_after_migrate, sender=self)
        user_logged_in.connect(middleware.remember_password_state)
