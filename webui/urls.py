from django.urls import path

from webui import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
]
