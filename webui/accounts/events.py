"""What accounts write to the audit log: sign-ins, sign-outs, passwords, new users, roles.

Web events are recorded by the views that cause them (so a test's ``force_login`` is not a
sign-in). Role and activation changes, and passwords set outside the password page
(``manage.py changepassword``, ``manage.py shell``), are recorded from model signals,
whatever changed them; the app has no pages for those, so they come from the shell and are
recorded as such.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models
from django.http import HttpRequest

from webui.accounts import throttle
from webui.accounts.roles import OPERATOR, VIEWER
from webui.audit.models import record


class AccountAction(models.TextChoices):
    SIGN_IN = "sign_in", "Sign in"
    SIGN_IN_FAILED = "sign_in_failed", "Failed sign-in"
    SIGN_IN_LOCKED_OUT = "sign_in_locked_out", "Sign-in refused (too many failures)"
    SIGN_OUT = "sign_out", "Sign out"
    PASSWORD_CHANGE = "password_change", "Password change"
    USER_CREATE = "user_create", "User created"
    ROLE_CHANGE = "role_change", "Role change"
    USER_DEACTIVATE = "user_deactivate", "User deactivated"
    USER_ACTIVATE = "user_activate", "User reactivated"


def shell_actor() -> str:
    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "shell:unknown"


def record_web(
    request: HttpRequest,
    action: str,
    result: str,
    *,
    actor: str | None = None,
    user: Any = None,
    parameters: dict[str, Any] | None = None,
    error: str = "",
) -> None:
    """One event from the web UI, with the client's address among its parameters."""
    user = user if user is not None else getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False):
        user = None
    record(
        actor=actor or (user.get_username() if user else "anonymous"),
        source="web",
        host=settings.PASSTHROUGH_HOSTNAME,
        action=str(action),
        result=result,
        parameters={"address": throttle.client_address(request), **(parameters or {})},
        error=error,
        user=user,
    )


def record_shell(action: str, parameters: dict[str, Any], result: str = "succeeded") -> None:
    record(
        actor=shell_actor(),
        source="shell",
        host=settings.PASSTHROUGH_HOSTNAME,
        action=str(action),
        result=result,
        parameters=parameters,
    )


def _operators_among(user_ids: set[int] | None) -> set[int]:
    """Which of ``user_ids`` (None: of everyone) are in the operator group."""
    members = get_user_model().objects.filter(groups__name=OPERATOR)
    if user_ids is not None:
        members = members.filter(pk__in=user_ids)
    return set(members.values_list("pk", flat=True))


def groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """m2m_changed on User.groups: a user who joins or leaves the operator group changes role.

    Before the change, note which of the users concerned are operators; after it, record
    each whose membership differs. (``pk_set`` cannot tell: for a removal it holds every
    group asked for, present or not.)
    """
    if action not in ("pre_add", "pre_remove", "pre_clear", "post_add", "post_remove", "post_clear"):
        return
    if reverse:  # group.user_set.add(...): the instance is the group, pk_set the users
        if instance.name != OPERATOR:
            return
        concerned = set(pk_set) if pk_set is not None else None
    else:  # user.groups.add(...): the instance is the user, pk_set the groups
        if pk_set is not None and not Group.objects.filter(pk__in=pk_set, name=OPERATOR).exists():
            return
        concerned = {instance.pk}
    if action.startswith("pre_"):
        before = _operators_among(concerned)
        instance._operators_before = (before if concerned is None else concerned, before)
        return
    concerned, before = instance.__dict__.pop("_operators_before", (set(), set()))
    after = _operators_among(concerned)
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=concerned)}
    for pk in sorted(users):
        if (pk in before) != (pk in after):
            was, now = (OPERATOR, VIEWER) if pk in before else (VIEWER, OPERATOR)
            record_shell(
                AccountAction.ROLE_CHANGE,
                {"username": users[pk].get_username(), "group": OPERATOR, "from": was, "to": now},
            )


def remember_active(sender: Any, instance: Any, raw: bool, update_fields: Any, **kwargs: Any) -> None:
    """pre_save on User: note whether a saved account was active, when the save may change it."""
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return  # e.g. the last_login stamp of every sign-in
    instance._was_active = sender.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first()


# Set on the user by the password page, which records its own event with the address.
RECORDED_BY_PAGE = "_password_change_recorded_by_page"


def active_changed(sender: Any, instance: Any, raw: bool, **kwargs: Any) -> None:
    """post_save on User: record a deactivation (it ends the account's sessions) or a reactivation."""
    was_active = instance.__dict__.pop("_was_active", None)
    if raw or was_active is None or was_active == instance.is_active:
        return
    action = AccountAction.USER_ACTIVATE if instance.is_active else AccountAction.USER_DEACTIVATE
    record_shell(action, {"username": instance.get_username()})


def password_changed(sender: Any, instance: Any, raw: bool, created: bool, **kwargs: Any) -> None:
    """post_save on User: a password set with ``set_password`` and saved, from the shell: ``changepassword`` or code.

    Django keeps the raw password in ``_password`` from ``set_password`` until the save
    that follows has run its post_save, and clears it when it rehashes a password at
    sign-in (same password, stronger hash), so a rehash is no change. A new account's
    first password is part of its creation, recorded as such.
    """
    by_page = instance.__dict__.pop(RECORDED_BY_PAGE, False)
    if raw or created or by_page or getattr(instance, "_password", None) is None:
        return
    record_shell(AccountAction.PASSWORD_CHANGE, {"username": instance.get_username()})
