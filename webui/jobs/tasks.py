"""The Celery tasks a host's root worker runs, one per action, with strict arguments.

The broker is not trusted to be private: a message can be forged. So every task takes
keyword arguments only, each of a declared JSON type and size; anything else (a missing or
extra argument, a wrong type, positional arguments) is refused before any code that acts
runs, and the refusal is audited (the schemas and the refusal live in ``messages``). The
worker accepts JSON only (settings), and task names outside this module are unknown to it,
so Celery drops them. A task that passes runs its job through ``runner``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, current_app
from celery.exceptions import Reject

from webui.jobs.messages import SCHEMAS, ArgumentRefused, refuse_message, validate_arguments

logger = logging.getLogger(__name__)


class PrivilegedTask(Task):
    """Validates the message before anything runs; refusals are audited and dropped."""

    action: str = ""
    acks_late = True
    typing = False  # arguments are checked in run(), against the schema, on the worker

    def run(self, *args: Any, **kwargs: Any) -> None:
        # Imported here, on the worker: the web process imports this module to send tasks and
        # never needs the runner (nor passthrough.ops behind it).
        from webui.jobs import runner

        try:
            clean = validate_arguments(self.action, args, kwargs)
        except ArgumentRefused as error:
            refuse_message(self.action, f"Refused a {self.action} message: {error}.", kwargs)
            raise Reject(str(error), requeue=False) from None
        runner.run_job(self.action, clean)


def _register(action: str) -> Task:
    task_class = type(
        f"{action.title().replace('_', '')}Task", (PrivilegedTask,), {"name": f"passthrough.{action}", "action": action}
    )
    return current_app.register_task(task_class())


TASKS: dict[str, Task] = {action: _register(action) for action in SCHEMAS}
