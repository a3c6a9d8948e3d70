"""`manage.py add_user NAME --role viewer|operator`: an account with a one-time password.

The app has no user administration pages; an admin adds people from the shell. The
printed password must be changed at the first sign-in.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from webui.accounts import events
from webui.accounts.models import require_password_change
from webui.accounts.passwords import one_time_password
from webui.accounts.roles import ROLES, VIEWER, set_role


class Command(BaseCommand):
    help = "Add a user in a role (viewer reads everything; operator may also run jobs), with a one-time password."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, default=VIEWER, help="viewer (default) or operator")

    def handle(self, *args: Any, username: str, role: str, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            raise CommandError(f"An account named {username!r} exists already; choose another name.")
        password = one_time_password()
        with transaction.atomic():  # the account and its audit events, or neither
            user = users.objects.create_user(username=username, password=password)
            events.record_shell(events.AccountAction.USER_CREATE, {"username": username, "role": role, "admin": False})
            set_role(user, role)
            require_password_change(user)
        self.stdout.write(f"Added {username} as {role}. One-time password (shown only now): {password}")
