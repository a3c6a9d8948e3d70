"""Where a user is in the setup wizard for a host, so it resumes where they left it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

STEPS = (
    (1, "Check this host"),
    (2, "Pick a device"),
    (3, "Review the plan"),
    (4, "Apply"),
    (5, "Give it to a VM"),
)
LAST_STEP = len(STEPS)


class WizardState(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="+")
    step = models.PositiveSmallIntegerField(default=1)
    reached = models.PositiveSmallIntegerField(default=1)  # the furthest step opened, for the step links
    acknowledged = models.JSONField(default=list)  # ids of failing checks whose fix the user has read
    device = models.CharField(max_length=64, blank=True, default="")  # the picked function's address
    release_console = models.BooleanField(default=False)
    persist = models.BooleanField(default=False)  # also bind at every boot
    confirm = models.CharField(max_length=200, blank=True, default="")  # typed phrase for host-critical members
    target = models.CharField(max_length=20, default="qemu")  # the hypervisor of step 5
    plan_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    bind_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    persist_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm = models.CharField(max_length=800, blank=True, default="")  # the VM step 5 gives the device to (kind:id)
    vm_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "host"], name="one_wizard_per_user_and_host")]

    def __str__(self) -> str:
        return f"{self.user} on {self.host}: step {self.step}"

    def go_to(self, step: int) -> None:
        self.step = step
        self.reached = max(self.reached, step)

    def restart(self) -> None:
        """Back to step 1 with no choices; the jobs already run stay in the job list."""
        fresh = WizardState(user=self.user, host=self.host)
        for field in ("step", "reached", "acknowledged", "device", "release_console", "persist", "confirm"):
            setattr(self, field, getattr(fresh, field))
        self.plan_job = self.bind_job = self.persist_job = self.vm_job = None
        self.vm = ""
        self.finished = None
