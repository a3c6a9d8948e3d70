"""Sign-in, sign-out and choosing a password, on Django's own auth views."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import reverse_lazy

from webui.accounts.middleware import SESSION_FLAG
from webui.accounts.models import require_password_change


class SignInView(auth_views.LoginView):
    template_name = "accounts/sign_in.html"
    redirect_authenticated_user = True


class SignOutView(auth_views.LogoutView):
    pass


class PasswordView(auth_views.PasswordChangeView):
    template_name = "accounts/password.html"
    success_url = reverse_lazy("home")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["required"] = bool(self.request.session.get(SESSION_FLAG))
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        require_password_change(self.request.user, required=False)
        self.request.session.pop(SESSION_FLAG, None)
        messages.success(self.request, "Your password is changed.")
        return response
