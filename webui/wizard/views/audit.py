"""The audit log: filters, the chain's verification on top, and CSV/JSON exports of the filtered set."""

from __future__ import annotations

import csv
import json
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from passthrough.pci.address import is_address, normalize
from webui.audit import chain
from webui.audit.models import AuditEvent, verify_chain, verify_recent
from webui.wizard.forms import AUDIT_ACTIONS, AuditFilterForm

# Every field the hash covers, then the chain's own two: an export can be verified offline.
EXPORT_FIELDS = (*chain.HASHED_FIELDS, "prev_hash", "hash")
# The page names actions as its filter does; the exports keep the codes, as hashed.
ACTION_LABELS = dict(AUDIT_ACTIONS)


def filtered_events(form: AuditFilterForm) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.order_by("-id")
    if not form.is_valid():
        return events
    data = form.cleaned_data
    if data["host"]:
        events = events.filter(host=data["host"])
    if data["user"]:
        events = events.filter(actor=data["user"])
    if data["action"]:
        events = events.filter(action=data["action"])
    if data["result"]:
        events = events.filter(result=data["result"])
    if data["device"]:
        device = data["device"].strip().lower()
        # A full address is matched as written in the log; a short one (01:00.0) as part of one.
        events = events.filter(targets__icontains=normalize(device) if is_address(device) else device)
    if data["since"]:
        events = events.filter(created__date__gte=data["since"])
    if data["until"]:
        events = events.filter(created__date__lte=data["until"])
    return events


@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    events = filtered_events(form)
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "verification": verify_recent(),
        "action_labels": ACTION_LABELS,
    }
    return render(request, "audit/log.html", context)


def _row(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in EXPORT_FIELDS}
    row["created"] = event.created.isoformat()
    return row


@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404(f"There is no {fmt!r} export; use csv or json.")
    events = filtered_events(AuditFilterForm(request.GET)).order_by("id")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "json":
        body = {
            "exported": timezone.now().isoformat(),
            "filters": {key: value for key, value in request.GET.items() if value},
            "chain": verify_chain().to_json(),
            "events": [_row(event) for event in events.iterator(chunk_size=500)],
        }
        response = HttpResponse(json.dumps(body, default=str, indent=1), content_type="application/json")
    else:
        response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_lines(events: QuerySet[AuditEvent]) -> Any:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for event in events.iterator(chunk_size=500):
        row = _row(event)
        yield writer.writerow(
            [
                json.dumps(row[name], default=str, sort_keys=True) if isinstance(row[name], dict | list) else row[name]
                for name in EXPORT_FIELDS
            ]
        )
