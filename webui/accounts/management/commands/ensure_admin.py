"""`manage.py ensure_admin`: create the first admin account on a fresh install, once.

scripts/run calls it at every start. When an account that may run jobs already exists it
does nothing (and says so only with --verbosity 2), so it never resets a password. The
password it prints is shown once and must be changed at the first sign-in.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from webui.accounts import events
from webui.accounts.models import require_password_change
from webui.accounts.passwords import one_time_password
from webui.accounts.roles import OPERATOR, set_role


class Command(BaseCommand):
    help = "Create the first admin account (an operator) with a one-time password, unless an admin exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="name of the account to create (default: admin)")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        users = get_user_model()
        existing = users.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if existing is not None:
            if options["verbosity"] >= 2:
                self.stdout.write(f"An admin account exists ({existing.get_username()}); nothing to do.")
            return
        if users.objects.filter(username=username).exists():
            raise CommandError(
                f"An account named {username!r} exists but is not an active admin; "
                "choose another name with --username, or fix that account with `manage.py changepassword`."
            )
        password = one_time_password()
        with transaction.atomic():  # the account and its audit events, or neither
            user = users.objects.create_superuser(username=username, email="", password=password)
            events.record_shell(
                events.AccountAction.USER_CREATE, {"username": username, "role": OPERATOR, "admin": True}
            )
            set_role(user, OPERATOR)
            require_password_change(user)
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Created the first admin account. Sign in with:",
                    f"    user:     {username}",
                    f"    password: {password}",
                    "This password is shown only now; you will choose your own at the first sign-in.",
                    "",
                ]
            )
        )
