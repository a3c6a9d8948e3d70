from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_migrate, post_save, pre_save


class AccountsConfig(AppConfig):
    """Sign-in, the two roles (viewer and operator) and the first admin account."""

    name = "webui.accounts"
    label = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in

        from webui.accounts import events, middleware, roles

        # After every migrate, so a fresh database has both roles before anyone signs in.
        post_migrate.connect(roles.ensure_roles_after_migrate, sender=self)
        user_logged_in.connect(middleware.remember_sign_in_state)
        # Role and activation changes reach the audit log whoever makes them.
        users = get_user_model()
        m2m_changed.connect(events.groups_changed, sender=users.groups.through)
        pre_save.connect(events.remember_active, sender=users)
        post_save.connect(events.active_changed, sender=users)
        post_save.connect(events.password_changed, sender=users)
