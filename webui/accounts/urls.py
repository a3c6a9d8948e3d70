from django.contrib.auth.decorators import login_not_required
from django.urls import path
from django.views.generic import RedirectView

from webui.accounts import views

app_name = "accounts"
urlpatterns = [
    path("sign-in/", views.SignInView.as_view(), name="sign_in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign_out"),
    path("password/", views.PasswordView.as_view(), name="password"),
    # Django's usual address, which people and tools type: to the sign-in page, ?next= kept.
    path(
        "login/",
        login_not_required(RedirectView.as_view(pattern_name="accounts:sign_in", query_string=True)),
        name="login",
    ),
]
