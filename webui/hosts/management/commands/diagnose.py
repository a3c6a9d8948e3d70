from webui.hosts.management.hardware import HardwareCommand


class Command(HardwareCommand):
    name = "diagnose"
