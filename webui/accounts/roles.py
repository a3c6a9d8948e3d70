"""The two roles: a *viewer* reads everything, an *operator* may also run jobs on hosts.

A role is a Django group; what makes an operator is the ``jobs.run_jobs`` permission, so
a permission check (``user.has_perm``) is the only test views make, and a superuser
passes it too.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
RUN_JOBS = "jobs.run_jobs"


def run_jobs_permission() -> Permission:
    from webui.jobs.models import Job

    # get_or_create: post_migrate handlers run in app order, so ours may come before the
    # one that creates the jobs app's permissions on a fresh database.
    permission, _ = Permission.objects.get_or_create(
        codename="run_jobs",
        content_type=ContentType.objects.get_for_model(Job),
        defaults={"name": "Can run privileged jobs on hosts"},
    )
    return permission


def ensure_roles() -> dict[str, Group]:
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    operator, _ = Group.objects.get_or_create(name=OPERATOR)
    operator.permissions.add(run_jobs_permission())
    return {VIEWER: viewer, OPERATOR: operator}


def ensure_roles_after_migrate(**kwargs: Any) -> None:
    ensure_roles()


def set_role(user: Any, role: str) -> None:
    """Put ``user`` in exactly one role."""
    if role not in ROLES:
        raise ValueError(f"{role!r} is not a role; use {' or '.join(ROLES)}.")
    groups = ensure_roles()
    # The other role out, this one in: never out and back in, which the audit log would
    # record as two role changes (events.groups_changed) when nothing changed.
    user.groups.remove(*(group for name, group in groups.items() if name != role))
    user.groups.add(groups[role])


def can_operate(user: Any) -> bool:
    """Whether ``user`` holds jobs.run_jobs, directly or through a group (superusers always).

    The same answer as ``user.has_perm(RUN_JOBS)`` for the model backend, in one query instead
    of two, kept on the user object for the rest of the request: every page asks it.
    """
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_can_operate", None)
    if cached is None:
        cached = user._can_operate = _holds_run_jobs(user.pk)
    return bool(cached)


def _holds_run_jobs(user_id: int) -> bool:
    # Plain SQL over the auth tables (names from the models): every page asks this, and
    # building the same question with the ORM costs twenty times what the database does.
    user_model = get_user_model()
    user_groups = user_model._meta.get_field("groups").remote_field.through._meta.db_table
    user_permissions = user_model._meta.get_field("user_permissions").remote_field.through._meta.db_table
    group_permissions = Group._meta.get_field("permissions").remote_field.through._meta.db_table
    query = f"""
        SELECT 1 FROM {Permission._meta.db_table} p
        JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id
        WHERE p.codename = %s AND ct.app_label = %s AND (
            EXISTS (SELECT 1 FROM {user_groups} ug JOIN {group_permissions} gp ON gp.group_id = ug.group_id
                    WHERE ug.user_id = %s AND gp.permission_id = p.id)
            OR EXISTS (SELECT 1 FROM {user_permissions} up WHERE up.user_id = %s AND up.permission_id = p.id))
        LIMIT 1"""  # noqa: S608 (table names from the models, values as parameters)
    with connection.cursor() as cursor:
        cursor.execute(query, ["run_jobs", "jobs", user_id, user_id])
        return cursor.fetchone() is not None


def role_of(user: Any) -> str:
    return OPERATOR if can_operate(user) else VIEWER
