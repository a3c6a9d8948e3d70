"""Devices and IOMMU groups: every group with its members, filtered by text and kind.

A snapshot never changes, so each group's HTML is rendered once per snapshot and role and
kept (see snapshots.Prepared); rendering a 1,024-function host's groups costs many times
what serving them does. The unfiltered list is also kept deflated (stitch.py), so a page
request compresses only its own few kilobytes around it. Nothing in the kept HTML depends
on the request: every group's button belongs to the page's one form and its CSRF token.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from webui.accounts.roles import can_operate
from webui.hosts.models import Host
from webui.wizard import snapshots
from webui.wizard.catalog import FILTER_KINDS, GroupCard, filter_cards
from webui.wizard.forms import GroupFilterForm
from webui.wizard.stitch import Compressed, compress_part, gzip_around
from webui.wizard.views.common import get_host, host_page, render_page

ACCEPTS_GZIP = re.compile(r"\bgzip\b")
SLOT = "\x00groups\x00"  # where the kept list goes in the rendered page
NOTE = "group_note"  # the session key of a refusal to show inside its group
FILTERS = ("q", "kind")


def note_at_group(request: HttpRequest, host: Host, group: int, text: str) -> None:
    """Say ``text`` inside IOMMU group ``group`` on the next page that shows the group's actions."""
    request.session[NOTE] = {"host": host.name, "group": group, "text": text}


def take_note(request: HttpRequest, host: Host, group: int | None = None) -> tuple[int, str] | None:
    """The note kept for a group of ``host`` (of ``group``, if given) as (group, text), once."""
    note = request.session.get(NOTE)
    if not isinstance(note, dict) or note.get("host") != host.name or group not in (None, note.get("group")):
        return None
    del request.session[NOTE]
    return int(note["group"]), str(note["text"])


def _render_cards(
    prepared: snapshots.Prepared,
    cards: list[GroupCard],
    base: dict[str, Any],
    operate: bool,
    note: tuple[int, str] | None = None,
) -> str:
    parts = []
    for card in cards:
        if note and note[0] == card.id:  # this request's own words: rendered for it, not kept
            variables = {**base, "card": card, "can_operate": operate, "note": note[1]}
            parts.append(render_to_string("hosts/groups.html#group", variables))
            continue
        part = prepared.fragments.get((card.id, operate))
        if part is None:
            variables = {**base, "card": card, "can_operate": operate}
            part = prepared.fragments[(card.id, operate)] = render_to_string("hosts/groups.html#group", variables)
        parts.append(part)
    return "".join(parts)


def _whole_list(prepared: snapshots.Prepared, base: dict[str, Any], operate: bool) -> Compressed:
    kept = prepared.lists.get(operate)
    if kept is None:
        kept = prepared.lists[operate] = compress_part(_render_cards(prepared, prepared.cards, base, operate).encode())
    return kept


@require_GET
def groups(request: HttpRequest, host: str) -> HttpResponse:
    context = host_page(get_host(request, host))
    form = GroupFilterForm(request.GET)
    text, kind = (form.cleaned_data["q"], form.cleaned_data["kind"]) if form.is_valid() else ("", "")
    # Prefixes for the links of every row: one reverse() per page rather than one per function.
    name = context["host"].name
    context.update(
        form=form,
        device_base=reverse("groups", kwargs={"host": name}),
        groups_base=reverse("bind_group", kwargs={"host": name, "group": 0})[: -len("0/bind/")],
        filtered=bool(text or kind),
        kinds=FILTER_KINDS.items(),
    )
    if context["snapshot"] is None:
        return render_page(request, "hosts/groups.html", context)
    prepared = snapshots.prepared(context["snapshot"])
    if not prepared.cards:
        return _no_groups(request, context, prepared)
    operate = can_operate(request.user)
    base = {key: context[key] for key in ("host", "device_base", "groups_base")}
    cards = filter_cards(prepared.cards, text, kind)
    note = take_note(request, context["host"])
    if note and note[0] not in {card.id for card in cards}:
        messages.error(request, note[1])  # its group is filtered out: said on top rather than lost
        note = None
    context.update(cards=cards, total=len(prepared.cards), ungrouped=[] if text or kind else prepared.ungrouped)
    if text or kind or note or getattr(request, "htmx", False):
        context["group_html"] = mark_safe(_render_cards(prepared, cards, base, operate, note))
        return _list_or_page(request, context)
    context["group_html"] = SafeString(SLOT)
    response = render_page(request, "hosts/groups.html", context)
    return _with_whole_list(request, response, _whole_list(prepared, base, operate))


def _no_groups(request: HttpRequest, context: dict[str, Any], prepared: snapshots.Prepared) -> HttpResponse:
    """A host without IOMMU groups (booted with the IOMMU off): every function, and the fix to read."""
    checks = context["snapshot"].checks()
    context.update(
        cards=[],
        total=0,
        ungrouped=prepared.ungrouped,
        iommu_check=next((check for check in checks if check.get("id") == "iommu"), None),
    )
    return _list_or_page(request, context)


def _list_or_page(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    """The page, or for the live filter only its list, with the address of what it shows."""
    response = render_page(request, "hosts/groups.html", context, partial="group-list")
    if getattr(request, "htmx", False):
        query = urlencode([(key, value) for key in FILTERS if (value := request.GET.get(key, ""))])
        response["HX-Replace-Url"] = context["device_base"] + (f"?{query}" if query else "")
    return response


def _with_whole_list(request: HttpRequest, response: HttpResponse, kept: Compressed) -> HttpResponse:
    head, slot, tail = response.content.partition(SLOT.encode())
    if not slot:  # the page shows no list (nothing to put in it)
        return response
    patch_vary_headers(response, ("Accept-Encoding",))
    if ACCEPTS_GZIP.search(request.headers.get("Accept-Encoding", "")):
        response.content = gzip_around(head, kept, tail)
        response["Content-Encoding"] = "gzip"
    else:
        response.content = head + kept.data + tail
    return response
