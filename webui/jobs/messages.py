"""The task message contract, shared by the sender (service) and the worker (tasks, runner).

A job's task is sent with keyword arguments built from its row (``task_arguments``); the
worker accepts a message only if its arguments match the action's schema (``SCHEMAS``,
``validate_arguments``): keyword arguments only, each of a declared JSON type and size.
Every message also carries what a database writer could otherwise change after the web app
signed it (``COMMON``): the job's id, the host it is for, and when it was issued.
A message the worker will not run is counted and audited (``refuse_message``).

Imports only the jobs' models and the audit's refusals, so the modules above it (tasks,
runner, service) share it without importing one another in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from webui.audit.refusals import refuse
from webui.jobs.models import PLANNABLE, Action, Job

MAX_LIST = 64
MAX_TEXT = 200


class ArgumentRefused(ValueError):
    pass


def _int(value: Any) -> int:
    if type(value) is not int or not 0 < value < 2**53:
        raise ArgumentRefused("must be a positive whole number")
    return value


def _count(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 65535:
        raise ArgumentRefused("must be a whole number from 0 to 65535")
    return value


def _text(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_TEXT:
        raise ArgumentRefused(f"must be text of 1 to {MAX_TEXT} characters")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ArgumentRefused("must be true or false")
    return value


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else _bool(value)


def _epoch(value: Any) -> float:
    """A moment as UTC epoch seconds (a job's creation, with its microseconds)."""
    if type(value) not in (int, float) or not 0 < value < 2**34:
        raise ArgumentRefused("must be a time in seconds since 1970")
    return float(value)


def _path(value: Any) -> str:
    """A VM reference: a domain name, a VMID, or qemu:<socket path> (paths run longer than names)."""
    if type(value) is not str or not 0 < len(value) <= 4 * MAX_TEXT:
        raise ArgumentRefused(f"must be text of 1 to {4 * MAX_TEXT} characters")
    return value


def _texts(value: Any) -> list[str]:
    if type(value) is not list or len(value) > MAX_LIST:
        raise ArgumentRefused(f"must be a list of at most {MAX_LIST} texts")
    return [_text(item) for item in value]


def _change(value: Any) -> str:
    if value not in PLANNABLE:
        raise ArgumentRefused(f"must be one of {', '.join(PLANNABLE)}")
    return str(value)


def _drivers(value: Any) -> dict[str, str | None] | None:
    if value is None:
        return None
    if type(value) is not dict or len(value) > MAX_LIST:
        raise ArgumentRefused(f"must be a mapping of at most {MAX_LIST} addresses to driver names")
    return {_text(key): _optional_text(item) for key, item in value.items()}


# Signed with every message, whatever its action: the job, the host it is for (so a message
# re-pointed at another host's queue and job row is refused there) and when the web app
# issued it, its row's creation (so an old message is refused however its row is changed).
COMMON: dict[str, Callable[[Any], Any]] = {"job_id": _int, "host": _text, "issued_at": _epoch}

# action -> {argument: validator}. The COMMON arguments come with every action's.
SCHEMAS: dict[str, dict[str, Callable[[Any], Any]]] = {
    Action.SCAN: {},
    Action.BIND_VFIO: {"address": _text, "confirm": _optional_text, "release_console": _bool},
    # released_console: what the bind released, {vtconN: None, framebuffer device: its driver}.
    Action.RESTORE_DRIVER: {"address": _text, "previous_drivers": _drivers, "released_console": _drivers},
    Action.RESET: {"address": _text, "method": _optional_text, "confirm": _optional_text},
    Action.TEST_RESET: {"address": _text, "confirm": _optional_text},
    Action.SET_SRIOV_VFS: {"address": _text, "count": _count, "confirm": _optional_text},
    Action.PERSIST_BINDING: {
        "addresses": _texts,
        "native_drivers": _drivers,
        "confirm": _optional_text,
        "fingerprint": _optional_text,
    },
    Action.UNPERSIST_BINDING: {"addresses": _texts, "fingerprint": _optional_text},
    Action.SET_KERNEL_CMDLINE: {"add": _texts, "remove": _texts, "fingerprint": _optional_text},
    Action.REBUILD_INITRAMFS: {},
    Action.PLAN_CHANGE: {
        "change": _change,
        "addresses": _texts,
        "add": _texts,
        "remove": _texts,
        "native_drivers": _drivers,
        "confirm": _optional_text,
    },
    Action.UNDO_CHANGE: {"undo_of": _int, "force": _bool},
    Action.VM_ATTACH: {
        "vm": _path,
        "addresses": _texts,
        "live": _optional_bool,
        "confirm": _optional_text,
        "fingerprint": _optional_text,
        "primary_gpu": _bool,
        "rom_file": _optional_text,  # a path; the worker checks where it leads (passthrough.vms.romfile)
    },
    Action.VM_DETACH: {"vm": _path, "addresses": _texts, "live": _optional_bool},
    Action.VM_DEFINE: {"addresses": _texts, "name": _text, "memory_mib": _count, "vcpus": _count},
}


def validate_arguments(action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    schema = SCHEMAS[action]
    if args:
        raise ArgumentRefused("positional arguments are not accepted")
    expected = {*COMMON, *schema}
    unknown = sorted(set(kwargs) - expected)
    missing = sorted(expected - set(kwargs))
    if unknown or missing:
        raise ArgumentRefused(
            "; ".join(
                part
                for part in (
                    f"unexpected argument(s) {', '.join(unknown)}" if unknown else "",
                    f"missing argument(s) {', '.join(missing)}" if missing else "",
                )
                if part
            )
        )
    clean = {}
    for name, check in {**COMMON, **schema}.items():
        try:
            clean[name] = check(kwargs[name])
        except ArgumentRefused as error:
            raise ArgumentRefused(f"{name} {error}") from None
    return clean


def task_arguments(job: Job) -> dict[str, Any]:
    """The keyword arguments a job's task is sent with, from the job row."""
    parameters = job.parameters
    first = job.targets[0] if job.targets else None
    by_action: dict[str, dict[str, Any]] = {
        Action.SCAN: {},
        Action.BIND_VFIO: {
            "address": first,
            "confirm": parameters.get("confirm"),
            "release_console": parameters.get("release_console", False),
        },
        Action.RESTORE_DRIVER: {
            "address": first,
            "previous_drivers": parameters.get("previous_drivers"),
            "released_console": parameters.get("released_console"),
        },
        Action.RESET: {"address": first, "method": parameters.get("method"), "confirm": parameters.get("confirm")},
        Action.TEST_RESET: {"address": first, "confirm": parameters.get("confirm")},
        Action.SET_SRIOV_VFS: {
            "address": first,
            "count": parameters.get("count"),
            "confirm": parameters.get("confirm"),
        },
        Action.PERSIST_BINDING: {
            "addresses": list(job.targets),
            "native_drivers": parameters.get("native_drivers"),
            "confirm": parameters.get("confirm"),
            "fingerprint": parameters.get("fingerprint"),
        },
        Action.UNPERSIST_BINDING: {"addresses": list(job.targets), "fingerprint": parameters.get("fingerprint")},
        Action.SET_KERNEL_CMDLINE: {
            "add": list(parameters.get("add", [])),
            "remove": list(parameters.get("remove", [])),
            "fingerprint": parameters.get("fingerprint"),
        },
        Action.REBUILD_INITRAMFS: {},
        Action.PLAN_CHANGE: {
            "change": parameters.get("change"),
            "addresses": list(job.targets),
            "add": list(parameters.get("add", [])),
            "remove": list(parameters.get("remove", [])),
            "native_drivers": parameters.get("native_drivers"),
            "confirm": parameters.get("confirm"),
        },
        Action.UNDO_CHANGE: {"undo_of": parameters.get("undo_of"), "force": parameters.get("force", False)},
        Action.VM_ATTACH: {
            "vm": parameters.get("vm"),
            "addresses": list(job.targets),
            "live": parameters.get("live"),
            "confirm": parameters.get("confirm"),
            "fingerprint": parameters.get("fingerprint"),
            "primary_gpu": parameters.get("primary_gpu", False),
            "rom_file": parameters.get("rom_file"),
        },
        Action.VM_DETACH: {"vm": parameters.get("vm"), "addresses": list(job.targets), "live": parameters.get("live")},
        Action.VM_DEFINE: {
            "addresses": list(job.targets),
            "name": parameters.get("name"),
            "memory_mib": parameters.get("memory_mib"),
            "vcpus": parameters.get("vcpus"),
        },
    }
    return {"job_id": job.pk, "host": job.host.name, "issued_at": issued_at(job), **by_action[job.action]}


def issued_at(job: Job) -> float:
    """When the web app issued the job: its row's creation, as UTC epoch seconds."""
    return job.created.timestamp()


def refuse_message(action: str, message: str, kwargs: dict[str, Any]) -> None:
    """Count a message the worker will not run (forged, stale, replayed, for another host): see refusals."""
    shown = {str(key)[:40]: repr(value)[:200] for key, value in list(kwargs.items())[:20]}
    job_id = kwargs.get("job_id") if type(kwargs.get("job_id")) is int else None
    refuse(settings.PASSTHROUGH_HOSTNAME, message, {"task": action, "arguments": shown}, job_id=job_id)
