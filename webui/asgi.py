"""ASGI entry point, for servers that speak ASGI; scripts/run uses WSGI (webui.wsgi)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")

application = get_asgi_application()
