"""Per-user account state the auth app does not keep."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    # Set for an account made with a printed one-time password: the first sign-in must replace it.
    must_change_password = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"profile of {self.user}"


def must_change_password(user: object) -> bool:
    profile = Profile.objects.filter(user=user).only("must_change_password").first()
    return bool(profile and profile.must_change_password)


def require_password_change(user: object, required: bool = True) -> None:
    Profile.objects.update_or_create(user=user, defaults={"must_change_password": required})
