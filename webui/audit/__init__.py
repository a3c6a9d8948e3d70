"""The audit log: one MAC-chained event per privileged action and per refusal, and its checks.

May import: nothing else of ``webui`` or ``passthrough``; every app writes through
``webui.audit.models.record`` and the refusal counter in ``webui.audit.refusals``.
"""
