"""Django's face of the hardware commands in :mod:`passthrough.cli`.

``manage.py inventory`` skips Django and runs ``passthrough.cli.main`` directly (see
manage.py); these classes give the same commands to ``call_command`` and ``manage.py
help``, with the same options, by calling the same functions.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from passthrough.cli import EXIT_BAD_INPUT, EXIT_OK, SUBCOMMANDS, Subcommand
from passthrough.errors import PassthroughError


class HardwareCommand(BaseCommand):
    name: str  # the key in passthrough.cli.SUBCOMMANDS
    # They read a host tree, not the database: nothing for Django's checks to guard.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    @property
    def subcommand(self) -> Subcommand:
        return SUBCOMMANDS[self.name]

    @property
    def help(self) -> str:  # type: ignore[override]
        return self.subcommand.help

    def add_arguments(self, parser: CommandParser) -> None:
        self.subcommand.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            code = self.subcommand.run(argparse.Namespace(**options), self.stdout)
        except PassthroughError as error:
            raise CommandError(str(error), returncode=EXIT_BAD_INPUT) from error
        if code != EXIT_OK:
            raise CommandError(f"{self.name} finished with exit code {code}; its output says why.", returncode=code)
