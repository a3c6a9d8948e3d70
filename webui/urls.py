from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from webui import views

urlpatterns = [
    # A health probe answers without a session (monitoring has none); it reveals no data.
    path("healthz", login_not_required(views.healthz), name="healthz"),
    path("accounts/", include("webui.accounts.urls")),
    path("", include("webui.wizard.urls")),
]

if settings.PASSTHROUGH_BENCH_HELLO:
    from webui.wizard.views.bench import hello

    # Only for bench/web.py, which sets PASSTHROUGH_BENCH_HELLO; not routed otherwise.
    urlpatterns.append(path("bench/hello", hello, name="bench_hello"))

handler400 = "webui.wizard.views.errors.bad_request"
handler403 = "webui.wizard.views.errors.permission_denied"
handler404 = "webui.wizard.views.errors.page_not_found"
handler500 = "webui.wizard.views.errors.server_error"
