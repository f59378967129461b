"""The benchmark's own machinery: a Redis of its own, and issue 11's bars beside its targets."""

import shutil

import pytest
import redis

from bench import report
from bench.procs import Procs, start_redis_server

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")


def test_the_bench_runs_a_throwaway_redis_and_stops_it_with_everything_else(tmp_path):
    # given a run's children
    with Procs(tmp_path) as procs:
        # when the bench starts its Redis
        child, url = start_redis_server(procs, shutil.which("redis-server"), tmp_path)
        client = redis.Redis.from_url(url)
        # then it is on a loopback port of its own, empty
        assert url.startswith("redis://127.0.0.1:") and not url.startswith("redis://127.0.0.1:6379")
        assert client.dbsize() == 0
    # and it is gone when the run ends, whatever ended it
    assert not child.alive()
    with pytest.raises(redis.ConnectionError):
        client.ping()


def _results(*, gateway_cpu: float, settlement_cpu: float) -> dict:
    load = {"rps": 1000.0, "p50_ms": 1.2, "p99_ms": 3.0}
    direct = {"rps": 90000.0, "p50_ms": 0.05, "p99_ms": 0.2}
    return {
        "mode": "compare",
        "meta": {"concurrency": [16]},
        "systems": {
            "direct": {"name": "direct", "available": True, "load": {"16": direct, "1": direct}},
            "gateway": {
                "name": "gateway",
                "available": True,
                "load": {"16": load, "1": load},
                "cost": {"calls": 10000, "cpu_us_per_call": gateway_cpu},
            },
            "litellm": {"name": "litellm", "available": True, "load": {"16": {"rps": 40.0}}},
        },
        "settlement": {"calls": 10000, "cpu_us_per_call": settlement_cpu},
    }


def test_issue_11_bars_are_judged_but_marked_informational():
    # given a run over issue 11's gateway bar and under its settlement bar
    results = _results(gateway_cpu=800.0, settlement_cpu=120.0)
    # when the targets are derived
    report.derive(results)
    # then both are judged, as informational rows beside the product targets
    by_name = {t["target"]: t for t in results["targets"]}
    gateway, settlement = (
        by_name["gateway CPU per call (issue 11)"],
        by_name["settlement CPU per call (issue 11)"],
    )
    assert (gateway["status"], gateway["informational"]) == (report.FAIL, True)
    assert (settlement["status"], settlement["informational"]) == (report.PASS, True)
    assert by_name["throughput vs LiteLLM, c=16 (issue 11)"]["status"] == report.FAIL  # 25x
    assert by_name["throughput vs LiteLLM, c=16"]["status"] == report.PASS  # >= 10x
    assert not by_name["throughput vs LiteLLM, c=16"]["informational"]


def test_the_settlers_pace_is_judged_against_issue_11s_bar():
    # given one run whose settler kept 6,500 records/s and one that kept 2,000
    fast, slow = (_results(gateway_cpu=500.0, settlement_cpu=100.0) for _ in range(2))
    fast["settlement"]["records_per_s"], slow["settlement"]["records_per_s"] = 6500.0, 2000.0
    # when the targets are derived
    for results in (fast, slow):
        report.derive(results)
    # then the pace is an informational row, passed by the first and failed by the second
    name = "settlement records/s, one worker (issue 11)"
    (row,) = [t for t in fast["targets"] if t["target"] == name]
    assert (row["status"], row["informational"], row["value"]) == (report.PASS, True, 6500.0)
    assert [t["status"] for t in slow["targets"] if t["target"] == name] == [report.FAIL]
    fast["settlement"]["seconds"] = 3.1
    assert "6,500 records/s" in report._cost_note({}, fast["settlement"])[0]
