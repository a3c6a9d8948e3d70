"""What the header of every page needs: the host switcher, the demo badge, the user's role."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from webui.accounts.roles import can_operate, role_of
from webui.wizard.views.common import hosts_of


def header(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"demo": settings.PASSTHROUGH_DEMO}
    match = getattr(request, "resolver_match", None)
    current = (match.kwargs.get("host") if match else None) or request.session.get("host")
    names = [host.name for host in hosts_of(request)]
    offline = [host.name for host in hosts_of(request) if host.is_offline]  # marked in the switcher
    if current not in names:
        current = names[0] if names else None
    return {
        "demo": settings.PASSTHROUGH_DEMO,
        "host_names": names,
        "offline_hosts": offline,
        "current_host": current,
        "host_base": reverse("host_home", kwargs={"host": current}) if current else None,
        "can_operate": can_operate(user),
        "role": role_of(user),
    }
