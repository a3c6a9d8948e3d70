"""Sign-in, sign-out and choosing a password, on Django's own auth views, throttled and audited."""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import reverse_lazy

from webui.accounts import events, throttle
from webui.accounts.events import AccountAction
from webui.accounts.middleware import SESSION_FLAG, SIGNED_OUT_IDLE
from webui.accounts.models import require_password_change


class SignInView(auth_views.LoginView):
    template_name = "accounts/sign_in.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # A locked account or address is refused before its password is even checked.
        credentials = {"username": request.POST.get("username")}
        if not AxesProxyHandler.is_allowed(request, credentials):
            return throttle.lockout_response(request, None, credentials)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["idle_minutes"] = self.request.session.pop(SIGNED_OUT_IDLE, None)
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        events.record_web(self.request, AccountAction.SIGN_IN, "succeeded", user=form.get_user())
        return response

    def form_invalid(self, form: Any) -> HttpResponse:
        # The name tried and the address it came from; never the password.
        tried = str(form.data.get("username", ""))[:150]
        events.record_web(self.request, AccountAction.SIGN_IN_FAILED, "failed", parameters={"username": tried})
        return super().form_invalid(form)


class SignOutView(auth_views.LogoutView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            events.record_web(request, AccountAction.SIGN_OUT, "succeeded", parameters={"reason": "signed out"})
        return super().post(request, *args, **kwargs)


class PasswordView(auth_views.PasswordChangeView):
    template_name = "accounts/password.html"
    success_url = reverse_lazy("home")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["required"] = bool(self.request.session.get(SESSION_FLAG))
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        setattr(form.user, events.RECORDED_BY_PAGE, True)  # recorded below, with the address
        response = super().form_valid(form)
        require_password_change(self.request.user, required=False)
        self.request.session.pop(SESSION_FLAG, None)
        events.record_web(self.request, AccountAction.PASSWORD_CHANGE, "succeeded")
        messages.success(self.request, "Your password is changed.")
        return response

    def form_invalid(self, form: Any) -> HttpResponse:
        # Which fields were refused and why (a wrong current password, a weak new one); no passwords.
        refused = {name: [str(error) for error in errors] for name, errors in form.errors.items()}
        events.record_web(
            self.request,
            AccountAction.PASSWORD_CHANGE,
            "failed",
            parameters={"refused": refused},
            error=" ".join(error for errors in refused.values() for error in errors),
        )
        return super().form_invalid(form)
