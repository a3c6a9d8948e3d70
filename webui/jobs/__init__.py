"""The jobs: saving and sending them (web process), running them (root worker).

Imports run one way, top to bottom:

- ``tasks`` (the Celery entry points) call ``runner``, which asks ``admission`` whether a
  message may start its job; ``service`` (submit, send, cancel) stores each queued job's
  message, signed once, and publishes it through ``signed``; ``reconcile`` and the
  ``device`` command use both.
- ``runner`` and ``service`` share ``messages`` (the task arguments, their schemas and the
  audited refusal of a message) and ``closing`` (JobRefused, closing a job that never
  started), which import only ``models`` and the audit.

May import: ``webui.hosts`` (the host a job is for, and its snapshot), ``webui.audit``,
``webui.accounts`` (whether the job's creator may still operate), ``webui.celery`` (the
Celery app), ``passthrough.ops`` and ``passthrough.vms`` (the operations a worker runs),
``passthrough.pci``, ``passthrough.boot``, ``passthrough.host`` and ``passthrough.errors``.
"""
