"""Jobs: a row saved before the task is enqueued, updated by the root worker step by step."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Action(models.TextChoices):
    SCAN = "scan", "Scan the host"
    BIND_VFIO = "bind_vfio", "Bind to vfio-pci"
    RESTORE_DRIVER = "restore_driver", "Give back to the host driver"
    RESET = "reset", "Reset the device"
    TEST_RESET = "test_reset", "Test the resets"
    SET_SRIOV_VFS = "set_sriov_vfs", "Set SR-IOV virtual functions"
    PERSIST_BINDING = "persist_binding", "Bind to vfio-pci at every boot"
    UNPERSIST_BINDING = "unpersist_binding", "Stop binding at boot"
    SET_KERNEL_CMDLINE = "set_kernel_cmdline", "Edit the kernel command line"
    REBUILD_INITRAMFS = "rebuild_initramfs", "Rebuild the initramfs"
    PLAN_CHANGE = "plan_change", "Show the file changes"
    UNDO_CHANGE = "undo_change", "Undo a change"
    VM_ATTACH = "vm_attach", "Give to a VM"
    VM_DETACH = "vm_detach", "Take back from a VM"
    VM_DEFINE = "vm_define", "Create a libvirt VM"


# The file changes a plan_change job can plan (each is also an action that applies it).
PLANNABLE = ("persist_binding", "unpersist_binding", "set_kernel_cmdline", "rebuild_initramfs")


# Changes to a VM (its configuration, or the running VM); an undo job puts each back.
VM_ACTIONS = ("vm_attach", "vm_detach", "vm_define")

# Actions that change the host; "scan" and "plan_change" only read it.
PRIVILEGED_ACTIONS = frozenset(action.value for action in Action) - {Action.SCAN.value, Action.PLAN_CHANGE.value}


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.ROLLED_BACK, State.EXPIRED, State.CANCELLED})


class Job(models.Model):
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="jobs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=40, choices=Action.choices)
    targets = models.JSONField(default=list)
    parameters = models.JSONField(default=dict)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED, db_index=True)
    steps = models.JSONField(default=list)
    result = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True, default="")  # what the user reads when it ends
    group = models.IntegerField(null=True, blank=True)  # the IOMMU group it locks, if any
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    snapshot = models.ForeignKey("hosts.Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who runs it while it is running: "machine boot-id pid start-time" (webui/jobs/owner.py).
    # The reconciler puts back only jobs whose owner is gone.
    owner = models.CharField(max_length=200, blank=True, default="")
    # The task message exactly as the web app signed it when it saved the job (webui/jobs/signed.py):
    # every send, the web app's and a worker's re-send, publishes this text and signs nothing.
    # Empty for a job no worker may send (made by an older version, or written into the database).
    signed_message = models.TextField(blank=True, default="", editable=False)

    class Meta:
        ordering = ["-created"]
        permissions = [("run_jobs", "Can run privileged jobs on hosts")]

    def __str__(self) -> str:
        return f"Job {self.pk}: {self.get_action_display()} {', '.join(self.targets)} on {self.host}"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def task_id(self) -> str:
        return f"job-{self.pk}"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "host": self.host.name,
            "action": self.action,
            "targets": self.targets,
            "state": self.state,
            "message": self.message,
            "steps": self.steps,
        }


class GroupLock(models.Model):
    """One job at a time per IOMMU group on a host.

    A row, not a lock in memory: it outlives a worker crash, and the reconciler that closes
    the crashed job releases it.
    """

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE)
    group = models.IntegerField()
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="lock")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "group"], name="one_job_per_group")]

    def __str__(self) -> str:
        return f"group {self.group} on {self.host} held by job {self.job_id}"
