"""`manage.py audit_verify`: walk the audit chain; exit 1 if any row was edited, inserted or deleted."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webui.audit.models import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain. Exit 0 when intact, 1 when tampered with."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain()
        if options["format"] == "json":
            self.stdout.write(json.dumps(result.to_json(), indent=2))
        elif result.ok:
            self.stdout.write(f"Audit log intact: {result.checked} events, head {result.head}.")
        else:
            self.stdout.write(f"Audit log TAMPERED WITH ({result.checked} events checked):")
            for problem in result.problems:
                self.stdout.write(f"  - {problem}")
        if not result.ok:
            raise SystemExit(1)
