"""``manage.py diagnose``: the findings of the kernel and VM logs, with the fix for this host.

Like the hardware commands (webui/hosts/management/hardware.py) it reads a host tree and
logs, never the database; the options, the table and the JSON live in
:mod:`passthrough.diagnose.report`.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from passthrough.diagnose import report
from passthrough.errors import PassthroughError


class Command(BaseCommand):
    help = report.HELP
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        report.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            code = report.run(argparse.Namespace(**options), self.stdout)
        except PassthroughError as error:
            raise CommandError(str(error), returncode=report.EXIT_BAD_INPUT) from error
        if code != report.EXIT_OK:
            raise CommandError(
                f"diagnose found {'problems' if code == report.EXIT_FINDINGS else 'an error'}; "
                "its output says what and how to fix it.",
                returncode=code,
            )
