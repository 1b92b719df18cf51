"""The benchmark harness end to end in its tiny mode (``python -m benchmarks --quick``):
every part runs against the real servers and the results file has every section and
target. Structure and correctness only: timing is never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.report import TARGET_NAMES
from tests.servers import ROOT, admin_pg_url, redis_base_url

REDIS_DB = 12  # this test's own db (loadtests use 10-11, the engine's tests 14, the app's 15)
VARIANTS = (
    "noop",
    "write_behind",
    "page",
    "sql_per_view",
    "celery_per_view",
    "coalesced",
    "policy",
)
RUN_TIMEOUT_S = 240


def test_quick_benchmark_run_writes_every_section_and_target(tmp_path):
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": admin_pg_url(),
        "BENCH_REDIS_URL": redis_base_url(),
        "BENCH_REDIS_DB": str(REDIS_DB),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Benchmark results")
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert results["machine"]["cores"] >= 1
    versions = results["versions"]
    assert versions["python"] and versions["redis_server"] and versions["postgres"]
    assert versions["packages"]["flask"] and versions["packages"]["sqlalchemy"]

    assert set(results["targets"]) == set(TARGET_NAMES)
    for name, target in results["targets"].items():
        assert set(target) >= {"target", "measured", "ok"}, name
        assert isinstance(target["ok"], bool), name
        assert target["measured"] is not None, name

    http = results["http"]
    assert http["round_trips"]["write_behind"]["sql_statements"] == 0
    for variant in VARIANTS:
        for dist in ("hot", "spread"):
            summary = http["variants"][variant][dist]
            assert summary["requests"] > 0, (variant, dist)
            assert "errors" not in summary, (variant, dist, summary.get("errors"))
            for sample in summary["samples"]:
                if variant != "noop":  # every accepted view reached Postgres
                    assert sample["views_persisted"] >= sample["views_accepted"] > 0

    flush = results["flush"]
    assert flush["verified_total_views"] > 0
    assert all(s["flush_s"] > 0 and s["raw_unnest_s"] > 0 for s in flush["sizes"].values())
    assert flush["increments"]["increments"] > flush["increments"]["distinct_counters"]

    memory = results["memory"]["by_shards"]
    assert {row["shards"] for row in memory} == {16, 256}
    assert all(row["bytes_per_counter"] > 0 and row["encoding"] for row in memory)

    policy = results["policy"]
    assert [row["pairs"] for row in policy["memory"]] == [
        row["remembered"] for row in policy["memory"]
    ]
    assert all(row["bytes_per_pair"] > 0 for row in policy["memory"])
    assert all(abs(row["error"]) < 0.05 for row in policy["hll"])
    trending = results["trending"]
    assert trending["buckets"] > 0 and len(trending["top_window_views"]) == 3
    assert trending["top_window_views"] == sorted(trending["top_window_views"], reverse=True)
    assert set(trending["latency_ms"]) == {
        "trending_24h",
        "trending_7d",
        "list_newest",
        "naive_24h_query",
    }
