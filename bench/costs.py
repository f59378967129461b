"""What a call costs, read from counters rather than clocks: CPU time of a process tree from
/proc and Redis's own INFO, over a fixed number of calls. A busy neighbour slows a run down, but
it barely changes these.
"""

import time
from dataclasses import dataclass

import redis

from bench.procs import tree_cpu_seconds

# Commands the bench itself sends to read these counters or watch the usage stream.
BENCH_COMMANDS = ("cmdstat_info", "cmdstat_xinfo|groups", "cmdstat_ping")


@dataclass
class RedisCounters:
    commands: int  # commands processed, the bench's own excluded
    cpu_s: float  # redis-server's user + system CPU


def redis_counters(client: redis.Redis) -> RedisCounters:
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    commands = sum(v["calls"] for name, v in stats.items() if name not in BENCH_COMMANDS)
    return RedisCounters(commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


class CostMeter:
    """CPU of a process tree, and optionally of a Redis, between start() and stop(calls)."""

    def __init__(self, pid: int, redis_client: redis.Redis | None = None):
        self.pid, self.redis = pid, redis_client
        self._cpu = 0.0
        self._redis: RedisCounters | None = None
        self._t0 = 0.0

    def start(self) -> "CostMeter":
        self._t0 = time.monotonic()
        self._cpu = tree_cpu_seconds(self.pid)
        if self.redis is not None:
            self._redis = redis_counters(self.redis)
        return self

    def stop(self, calls: int) -> dict:
        cpu = tree_cpu_seconds(self.pid) - self._cpu
        cost: dict = {
            "calls": calls,
            "seconds": time.monotonic() - self._t0,
            "cpu_s": cpu,
            "cpu_us_per_call": cpu / calls * 1e6 if calls else None,
        }
        if self._redis is not None and self.redis is not None:
            now = redis_counters(self.redis)
            commands = now.commands - self._redis.commands
            redis_cpu = now.cpu_s - self._redis.cpu_s
            cost |= {
                "redis_commands": commands,
                "redis_commands_per_call": commands / calls if calls else None,
                "redis_cpu_us_per_call": redis_cpu / calls * 1e6 if calls else None,
            }
        return cost
