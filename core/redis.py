"""The control plane's synchronous Redis client (workers, the API, the panel), and where a
Redis Cluster is recognised.

One client per process, built lazily from settings.REDIS_URL; tests that switch the URL call
`client.cache_clear()`. The gateway has its own asyncio client (proxy/gateway.py), built from
the same `cluster_nodes()`.

REDIS_URL may name a cluster: `redis+cluster://[user:password@]host:port[,host:port...]`, or
a plain URL with REDIS_CLUSTER_NODES (`host:port,host:port`) set. Any of the nodes will do: the
client discovers the others and follows the slots as they move. Every per-call key carries its
team's hash tag (livestate/keys.py), so every script runs on one node.
"""

from functools import cache
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import redis
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

# A pooled connection that Redis closed (a restart) fails on first use: the command is sent
# again on a new connection instead of failing the caller. Costs nothing when nothing fails,
# unlike a health check per checkout (a PING per command).
RETRY_ATTEMPTS = 2  # 0.1 s then 0.2 s: one is enough for a closed connection
RETRY_ON = [ConnectionError, TimeoutError]


def retry_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


CLUSTER_SCHEME = "redis+cluster://"


class ClusterConfig(NamedTuple):
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    return host.strip("[]"), int(port)


def cluster_config(url: str, nodes: str = "") -> ClusterConfig | None:
    """The cluster REDIS_URL (or REDIS_CLUSTER_NODES) names; None for one Redis."""
    if url.startswith(CLUSTER_SCHEME):
        rest = url[len(CLUSTER_SCHEME) :].split("/", 1)[0]
        creds, _, hosts = rest.rpartition("@")
        username = password = None
        if creds:
            parts = urlsplit(f"redis://{creds}@x")
            username, password = parts.username or None, parts.password
            password = unquote(password) if password else None
        return ClusterConfig([_host_port(h) for h in hosts.split(",") if h], username, password)
    if nodes.strip():
        parts = urlsplit(url)
        return ClusterConfig(
            [_host_port(h) for h in nodes.split(",") if h.strip()],
            parts.username or None,
            unquote(parts.password) if parts.password else None,
        )
    return None


def settings_cluster() -> ClusterConfig | None:
    return cluster_config(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES)


def make_client(
    url: str,
    nodes: str = "",
    *,
    socket_timeout: float,
    socket_connect_timeout: float | None = None,
):
    """A synchronous client for `url`: redis.Redis, or redis.RedisCluster when it (or `nodes`,
    as REDIS_CLUSTER_NODES) names a cluster."""
    connect_timeout = socket_connect_timeout or socket_timeout
    config = cluster_config(url, nodes)
    if config is None:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(retry_backoff(), RETRY_ATTEMPTS),
            retry_on_error=RETRY_ON,
        )
    from redis.cluster import ClusterNode

    return redis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in config.nodes],
        username=config.username,
        password=config.password,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
    )


@cache
def client() -> redis.Redis:
    return make_client(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES, socket_timeout=5)
