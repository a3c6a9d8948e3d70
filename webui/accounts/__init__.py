"""Accounts: sign-in, the two roles (viewer, operator), passwords, throttling and their audit.

May import: ``webui.audit`` (each account action is an audit event) and ``webui.jobs``
(``roles`` gives operators the permission on the Job model). Nothing from ``passthrough``:
who may act is decided here, what acting does is not.
"""
