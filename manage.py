#!/usr/bin/env python3
"""Django's command-line utility, with a fast path for the hardware commands.

``inventory``, ``readiness`` and ``capture`` (and the later ``vmconfig`` and ``device``)
only read a host tree, never the database, so ``manage.py`` hands them straight to
``passthrough.cli.main`` without starting Django: Django's start-up (``import
django.urls`` alone is ~280 ms here) would cost more than scanning a 1,024-function
host. Every other command goes through Django as usual.

The same commands also exist as Django management commands (webui/hosts/management/
commands/) that call the same ``passthrough.cli`` functions, so ``call_command("inventory")``
and ``manage.py help inventory`` work too.
"""

import os
import sys


def main() -> None:
    from passthrough.cli import SUBCOMMANDS

    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import gc

        from passthrough.cli import main as run_hardware_command

        # A scan allocates tens of thousands of small objects in a process that lives
        # well under a second: cyclic garbage collection would only cost time.
        gc.disable()
        sys.exit(run_hardware_command(sys.argv[1:], prog=os.path.basename(sys.argv[0])))

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
