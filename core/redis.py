"""The control plane's synchronous Redis client (workers, the API, the panel).

One client per process, built lazily from settings.REDIS_URL; tests that switch the URL call
`client.cache_clear()`. The gateway has its own asyncio pool (proxy/gateway.py).
"""

from functools import cache

import redis
from django.conf import settings


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
