"""One ASGI entry point: the gateway (/v1) and the mock upstream on a fast path, Django for the rest."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
django_app = get_asgi_application()

application = django_app
