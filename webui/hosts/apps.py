from django.apps import AppConfig


class HostsConfig(AppConfig):
    """The hosts whose hardware this app manages; holds the hardware management commands."""

    name = "webui.hosts"
    label = "hosts"
    verbose_name = "Hosts"
