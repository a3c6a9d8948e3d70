"""The jobs: saving and sending them (web process), running them (root worker).

Imports run one way, top to bottom:

- ``tasks`` (the Celery entry points) call ``runner``; ``service`` (submit, send, cancel)
  sends through ``tasks``; ``reconcile`` and the ``device`` command use both.
- ``runner`` and ``service`` share ``messages`` (the task arguments, their schemas and the
  audited refusal of a message) and ``closing`` (JobRefused, closing a job that never
  started), which import only ``models`` and the audit.
"""
