"""Targets, the markdown table and the PNG chart, all computed from the results dict."""

from __future__ import annotations

import operator

OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def _target(results: dict, op: str, bound: float, measured, detail: str) -> dict:
    if measured is None:
        return {"target": f"{op} {bound}", "measured": None, "ok": False, "detail": detail}
    return {
        "target": f"{op} {bound}",
        "measured": round(measured, 3),
        "ok": bool(OPS[op](measured, bound)),
        "detail": detail,
    }


def _get(d: dict, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


SERVER_GROUPS = ("gunicorn", "redis", "postgres", "celery_worker")


def server_cpu(variants: dict, variant: str, dist: str) -> float | None:
    """CPU µs per request of everything but the load generator (median of rounds)."""
    cpu = _get(variants, variant, dist, "cpu_us_per_request")
    return sum(cpu.get(g, 0) for g in SERVER_GROUPS) if cpu else None


def _ratio(a, b):
    return a / b if a is not None and b else None


TARGET_NAMES = (
    "write_behind_vs_noop_hot",
    "write_behind_vs_noop_spread",
    "write_behind_vs_noop_hot_sync",
    "write_behind_vs_noop_spread_sync",
    "write_behind_redis_round_trips",
    "page_vs_noop_hot",
    "page_vs_noop_spread",
    "page_vs_noop_hot_sync",
    "page_vs_noop_spread_sync",
    "persisted_write_behind_vs_celery_per_view_hot",
    "persisted_write_behind_vs_sql_per_view_hot",
    "write_behind_hot_vs_spread",
    "trending_24h_p99_ms",
    "flush_1k_vs_raw_unnest",
    "flush_100k_vs_raw_unnest",
    "flush_100k_vs_per_shard",
    "flush_1m_increments_vs_1k",
    "redis_bytes_per_pending_counter",
    "stretch_coalesced_vs_noop_hot",
    "policy_vs_raw_hot",
    "policy_bytes_per_remembered_pair",
    "unique_viewers_error",
)


def targets(results: dict) -> dict:
    v = _get(results, "http", "variants") or {}
    paired = _get(results, "http", "paired_ratios") or {}

    def ratio(name, a, b):
        """The median of per-round ratios when there is one, else the ratio of medians."""
        if name in paired:
            return paired[name]["median"]
        return _ratio(a, b)

    def rps(variant, dist):
        return _get(v, variant, dist, "rps")

    def persisted(variant, dist):
        return _get(v, variant, dist, "persisted_views_per_s")

    out = {}
    layouts = {"": (v, paired, _get(results, "http", "config", "gunicorn"))}
    sync = _get(results, "http", "layouts", "sync") or {}
    layouts["_sync"] = (
        sync.get("variants") or {},
        sync.get("paired_ratios") or {},
        sync.get("gunicorn"),
    )
    for variant, bound in (("write_behind", 0.7), ("page", 0.5)):
        for suffix, (lv, lp, command) in layouts.items():
            for dist in ("hot", "spread"):
                rate, noop = _get(lv, variant, dist, "rps"), _get(lv, "noop", dist, "rps")
                name = f"{variant}/noop {dist}"
                cpu = _ratio(server_cpu(lv, "noop", dist), server_cpu(lv, variant, dist))
                hits = _get(lv, variant, dist, "read_model", "hit_rate")
                out[f"{variant}_vs_noop_{dist}{suffix}"] = _target(
                    results,
                    ">=",
                    bound,
                    lp[name]["median"] if name in lp else _ratio(rate, noop),
                    f"`{command}`: median over rounds of {variant} / noop req/s (medians: "
                    f"{rate} / {noop}; server CPU per request gives {_fmt(cpu, '.2f')}"
                    + (f"; read model hit rate {hits:.1%}" if hits is not None else "")
                    + ")",
                )
    trips = _get(results, "http", "round_trips", "write_behind", "redis_round_trips")
    out["write_behind_redis_round_trips"] = _target(
        results, "<=", 1, trips, "Redis round trips per POST /api/posts/<id>/view (counted)"
    )
    wb = persisted("write_behind", "hot")
    for other, bound in (("celery_per_view", 4), ("sql_per_view", 3)):
        out[f"persisted_write_behind_vs_{other}_hot"] = _target(
            results,
            ">=",
            bound,
            ratio(f"persisted write_behind/{other} hot", wb, persisted(other, "hot")),
            f"persisted views/s: write_behind {wb} / {other} {persisted(other, 'hot')} "
            + (
                "(medians; ratio: median over rounds)"
                if f"persisted write_behind/{other} hot" in paired
                else "(ratio of the medians)"
            ),
        )
    out["write_behind_hot_vs_spread"] = _target(
        results,
        ">=",
        0.95,
        ratio("write_behind hot/spread", rps("write_behind", "hot"), rps("write_behind", "spread")),
        f"median over rounds of write_behind hot / spread req/s (medians: "
        f"{rps('write_behind', 'hot')} / {rps('write_behind', 'spread')})",
    )
    out["stretch_coalesced_vs_noop_hot"] = _target(
        results,
        ">=",
        0.9,
        ratio("coalesced/noop hot", rps("coalesced", "hot"), rps("noop", "hot")),
        "stretch, opt-in mode (COUNTERS_COALESCE_MS): median over rounds of coalesced / "
        f"noop req/s (medians: {rps('coalesced', 'hot')} / {rps('noop', 'hot')})",
    )
    policy_cpu = _ratio(server_cpu(v, "write_behind", "hot"), server_cpu(v, "policy", "hot"))
    out["policy_vs_raw_hot"] = _target(
        results,
        ">=",
        0.9,
        ratio("policy/raw hot", rps("policy", "hot"), rps("write_behind", "hot")),
        "median over rounds of policy / write_behind (raw) req/s on one hot post (medians: "
        f"{rps('policy', 'hot')} / {rps('write_behind', 'hot')}; every policy request a new "
        f"visitor; × noop {_fmt(ratio('policy/noop hot', None, None), '.2f')}; server CPU "
        "per request gives "
        f"{_fmt(policy_cpu, '.2f')})",
    )
    pol_mem = _get(results, "policy", "memory") or []
    biggest = max(pol_mem, key=lambda r: r["pairs"], default=None)
    out["policy_bytes_per_remembered_pair"] = _target(
        results,
        "<=",
        40,
        biggest["bytes_per_pair"] if biggest else None,
        f"{biggest['pairs']:,} remembered (visitor, row) pairs: MEMORY USAGE of the dedupe "
        f"sets ({'/'.join(biggest['encoding'])}; used_memory growth "
        f"{biggest['used_memory_growth_per_pair']} B/pair with the HyperLogLogs)"
        if biggest
        else "no policy run",
    )
    hll = _get(results, "policy", "hll") or []
    worst = max(hll, key=lambda r: abs(r["error"]), default=None)
    out["unique_viewers_error"] = _target(
        results,
        "<=",
        0.03,
        abs(worst["error"]) if worst else None,
        "largest |PFCOUNT - n| / n over "
        + ", ".join(f"{r['visitors']:,} ({r['error']:+.2%})" for r in hll)
        + " distinct visitors (Redis' HyperLogLog: 0.81% standard error)",
    )
    trending = _get(results, "trending", "latency_ms") or {}
    p99 = _get(trending, "trending_24h", "p99")
    out["trending_24h_p99_ms"] = _target(
        results,
        "<=",
        50,
        p99,
        f"p99 ms of GET /api/posts/trending?window=24h over "
        f"{_get(results, 'trending', 'posts')} posts, {_get(results, 'trending', 'buckets')} "
        f"hourly buckets (list_newest p99 {_get(trending, 'list_newest', 'p99')} ms, "
        f"naive per-request sum p99 {_get(trending, 'naive_24h_query', 'p99')} ms)",
    )
    sizes = _get(results, "flush", "sizes") or {}
    smallest = min(sizes, key=int, default=None)
    largest = max(sizes, key=int, default=None)
    for name, key, bound in (("1k", smallest, 2), ("100k", largest, 1.2)):
        size = sizes.get(key, {})
        out[f"flush_{name}_vs_raw_unnest"] = _target(
            results,
            "<=",
            bound,
            size.get("ratio"),
            f"{key} counters: flush {size.get('flush_s')} s / raw unnest "
            f"{size.get('raw_unnest_s')} s (median of each; per shard, as every flush "
            f"was before small ones went in one transaction: {size.get('ratio_per_shard')})",
        )
    big = sizes.get(largest, {})
    out["flush_100k_vs_per_shard"] = _target(
        results,
        "<=",
        1.1,
        _ratio(big.get("flush_s"), big.get("flush_per_shard_s")),
        f"{largest} counters: flush {big.get('flush_s')} s / every shard in its own "
        f"transaction {big.get('flush_per_shard_s')} s (a backlog this size takes that "
        "path; the check that choosing it costs nothing)",
    )
    inc = _get(results, "flush", "increments") or {}
    out["flush_1m_increments_vs_1k"] = _target(
        results,
        "<=",
        1.2,
        inc.get("ratio"),
        f"{inc.get('increments')} increments on {inc.get('distinct_counters')} counters: "
        f"{inc.get('flush_many_per_counter_s')} s / {inc.get('flush_1_per_counter_s')} s",
    )
    mem_rows = _get(results, "memory", "by_shards") or []
    default_shards = _get(results, "http", "config", "shards") or 16
    row = next((r for r in mem_rows if r["shards"] == default_shards), None)
    out["redis_bytes_per_pending_counter"] = _target(
        results,
        "<=",
        100,
        row["bytes_per_counter"] if row else None,
        f"{_get(results, 'memory', 'pending_counters')} pending counters, "
        f"{default_shards} shards (the default), {row['encoding'] if row else '?'}",
    )
    return out


# -- markdown ----------------------------------------------------------------

HTTP_ORDER = (
    "noop",
    "write_behind",
    "policy",
    "page",
    "sql_per_view",
    "celery_per_view",
    "coalesced",
)


def _fmt(x, spec=",.0f"):
    return "–" if x is None else format(x, spec)


def _http_tables(v: dict, paired: dict) -> list[str]:
    """The req/s table and the CPU-per-request table of one gunicorn layout."""
    lines = [
        "| variant | hot req/s | p50 ms | p99 ms | persisted views/s | × noop "
        "| spread req/s | p50 ms | p99 ms | persisted views/s | × noop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in HTTP_ORDER:
        if name not in v:
            continue
        cells = [f"`{name}`"]
        for dist in ("hot", "spread"):
            s = v[name].get(dist, {})
            noop = _get(v, "noop", dist, "rps")
            pair = _get(paired, f"{name}/noop {dist}", "median")
            cells += [
                _fmt(s.get("rps")),
                _fmt(s.get("p50_ms"), ".2f"),
                _fmt(s.get("p99_ms"), ".2f"),
                _fmt(s.get("persisted_views_per_s")),
                _fmt(pair if pair is not None else _ratio(s.get("rps"), noop), ".2f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    groups = ("gunicorn", "redis", "postgres", "celery_worker", "loadgen")
    lines += [
        "",
        "CPU per request (µs, from /proc, over the load and until the views were "
        "persisted; Postgres counts every backend on the server):",
        "",
        "| variant | distribution | " + " | ".join(groups) + " |",
        "|---|---|" + "---:|" * len(groups),
    ]
    for name in HTTP_ORDER:
        for dist in ("hot", "spread"):
            cpu = _get(v, name, dist, "cpu_us_per_request")
            if cpu:
                cells = " | ".join(_fmt(cpu.get(g)) for g in groups)
                lines.append(f"| `{name}` | {dist} | {cells} |")
    return lines


def _read_model_lines(http: dict) -> list[str]:
    """How the page runs found their rows in the read model, per layout and distribution."""
    layouts = {"gthread": http.get("variants", {})}
    layouts.update((k, o.get("variants", {})) for k, o in http.get("layouts", {}).items())
    parts = []
    for layout, variants in layouts.items():
        for dist in ("hot", "spread"):
            use = _get(variants, "page", dist, "read_model")
            if use and use.get("hit_rate") is not None:
                parts.append(
                    f"{layout} {dist} {use['hit_rate']:.1%} ({use['hit']:,} hits, "
                    f"{use['filled']:,} filled, {use['fenced']:,} fenced)"
                )
    if not parts:
        return []
    warm = http.get("read_model_warm_up") or {}
    return [
        "",
        f"Read model (`page`): every post's page was read once before the runs "
        f"({warm.get('filled', 0):,} rows filled); page reads that found their row: "
        + "; ".join(parts)
        + ".",
    ]


def markdown(results: dict) -> str:
    lines = ["# Benchmark results", ""]
    m, ver = results.get("machine", {}), results.get("versions", {})
    lines.append(
        f"{m.get('cores')} cores, {m.get('memory_mb')} MB; Python {ver.get('python')}, "
        f"Redis {ver.get('redis_server')}, Postgres {ver.get('postgres')}; "
        f"{results.get('started_at')}, `{results.get('command')}` "
        f"({results.get('duration_s')} s)."
    )
    bg = results.get("background_cpu_busy")
    if bg is not None:
        lines.append(f"Machine CPU busy before the run (other processes): {bg:.0%}.")
    lines.append("")
    http = results.get("http")
    if http:
        cfg = http["config"]
        lines += [
            "## HTTP",
            "",
            f"`{cfg['gunicorn']}`, load generator `{cfg['loadgen']}` with "
            f"{cfg['connections']} keep-alive connections, {cfg['duration_s']} s per run, "
            f"median of {cfg['rounds']} rounds (Celery: 1); spread = random post of "
            f"{cfg['spread_posts']:,}. × noop = median over rounds of the ratio to the "
            "`noop` run of the same round. Runs repeated because one gunicorn worker had "
            f"accepted nearly every connection: {http.get('unbalanced_runs_repeated', 0)}.",
            "",
        ]
        v = http.get("variants", {})
        lines += _http_tables(v, http.get("paired_ratios", {}))
        for layout, other in http.get("layouts", {}).items():
            lines += [
                "",
                f"The same variants under a second layout, `{other.get('gunicorn')}` "
                f"(worker class {layout}), in the same rounds:",
                "",
            ]
            lines += _http_tables(other.get("variants", {}), other.get("paired_ratios", {}))
        lines += _read_model_lines(http)
        trips = http.get("round_trips", {})
        if trips:
            lines += [
                "",
                "Per request (counted in-process): "
                + "; ".join(
                    f"`{k}` {t['redis_round_trips']:g} Redis round trips, "
                    f"{t['sql_statements']:g} SQL statements"
                    for k, t in trips.items()
                )
                + ".",
            ]
        cal = http.get("loadgen_calibration")
        if cal:
            lines += [
                "",
                "Load generator check (same connections, static 204 server vs `noop`):",
                "",
            ]
            lines += [
                "| tool | static req/s | noop req/s | static / noop | client CPU per request |"
            ]
            lines += ["|---|---:|---:|---:|---:|"]
            for tool, c in cal.items():
                lines.append(
                    f"| {tool} | {c['static_rps']:,.0f} | {c['noop_rps']:,.0f} | "
                    f"{c['static_over_noop']:.1f} | {c['client_cpu_us_per_request']} µs |"
                )
        lines.append("")
    flush = results.get("flush")
    if flush:
        lines += [
            "## Flush",
            "",
            f"`Counters.flush_all()` over {flush['shards']} shards vs one raw "
            f"`UPDATE … FROM unnest` of the same rows (median of {flush['reps']}). Up to "
            f"{flush.get('combine_max_fields', 0):,} fields in all, every shard's batch goes "
            f"in one transaction; above, each shard in its own, "
            f"{flush.get('flush_threads', 1)} at a time (the default). The last columns "
            "flush every shard in its own transaction whatever the size "
            "(`combine_max_fields=0`, as before), 2 and 1 (`flush_threads=1`) at a time.",
            "",
            "| dirty counters | flush ms | raw unnest ms | flush / raw | counters/s "
            "| per shard ms | per shard / raw | 1 thread ms | 1 thread / raw |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, s in flush["sizes"].items():
            apart, serial = s.get("flush_per_shard_s"), s.get("flush_1_thread_s")
            lines.append(
                f"| {int(n):,} | {s['flush_s'] * 1000:,.1f} | {s['raw_unnest_s'] * 1000:,.1f} | "
                f"{s['ratio']:.2f} | {s['flush_counters_per_s']:,} | "
                + (f"{apart * 1000:,.1f} | {s['ratio_per_shard']:.2f} | " if apart else "– | – | ")
                + (f"{serial * 1000:,.1f} | {s['ratio_1_thread']:.2f} |" if serial else "– | – |")
            )
        inc = flush.get("increments")
        if inc:
            lines += [
                "",
                f"{inc['increments']:,} increments on {inc['distinct_counters']:,} counters: "
                f"flush {inc['flush_many_per_counter_s'] * 1000:.1f} ms vs "
                f"{inc['flush_1_per_counter_s'] * 1000:.1f} ms for one increment each "
                f"(ratio {inc['ratio']:.2f}).",
            ]
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines += [
            "## Redis memory",
            "",
            f"{mem['pending_counters']:,} pending counters (`MEMORY USAGE` of the pending hashes).",
            "",
            "| shards | fields per hash | encoding | bytes per counter | used_memory growth |",
            "|---:|---:|---|---:|---:|",
        ]
        for r in mem["by_shards"]:
            lines.append(
                f"| {r['shards']} | {r['fields_per_shard']:,} | {r['encoding']} | "
                f"{r['bytes_per_counter']} | {r['used_memory_growth_per_counter']} |"
            )
        lines.append("")
        if mem.get("read_model"):
            lines += [
                "Read model (`engine/readmodel.py`): `used_memory` growth per row filled, "
                "`MEMORY USAGE` of a sample beside it.",
                "",
                "| rows | what a row keeps | fields | bytes per row | MEMORY USAGE | total |",
                "|---:|---|---:|---:|---:|---:|",
            ]
            for r in mem["read_model"]:
                lines.append(
                    f"| {r['rows']:,} | {r['kind']} | {r['fields']} | {r['bytes_per_row']} | "
                    f"{r['memory_usage_per_row']} | {r['total_mb']} MB |"
                )
            lines.append("")
    pol = results.get("policy")
    if pol:
        lines += [
            "## View policy: dedupe memory and unique-viewer error",
            "",
            f"Distinct visitors, one view each, through the policy's increment script "
            f"({pol['dedupe_buckets']:,} dedupe sets per slot over 16 shards). Bytes per pair: "
            "`MEMORY USAGE` of the dedupe sets; used_memory growth includes the "
            "HyperLogLogs and the pending hash.",
            "",
            "| pairs | sets | members per set | encoding | bytes per pair | used_memory "
            "growth per pair | unique viewers (error) |",
            "|---:|---:|---:|---|---:|---:|---:|",
        ]
        for m, h in zip(pol["memory"], pol["hll"], strict=True):
            lines.append(
                f"| {m['pairs']:,} | {m['sets']:,} | {m['members_per_set']} | "
                f"{'/'.join(m['encoding'])} | {m['bytes_per_pair']} | "
                f"{m['used_memory_growth_per_pair']} | {h['estimate']:,} ({h['error']:+.2%}) |"
            )
        lines.append("")
    tg = results.get("targets")
    if tg:
        lines += [
            "## Targets",
            "",
            "| target | wanted | measured | ok | |",
            "|---|---|---:|:-:|---|",
        ]
        for name, t in tg.items():
            mark = "✅" if t["ok"] else "❌"
            measured = _fmt(t["measured"], "g")
            lines.append(f"| `{name}` | {t['target']} | {measured} | {mark} | {t['detail']} |")
        lines.append("")
    return "\n".join(lines)


# -- chart ---------------------------------------------------------------------


def chart(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [2.2, 1.2, 1]})
    v = _get(results, "http", "variants") or {}
    ax = axes[0]
    names = [n for n in HTTP_ORDER if n in v]
    width = 0.2
    for i, (dist, key, color, hatch) in enumerate(
        [
            ("hot", "rps", "#1f77b4", None),
            ("hot", "persisted_views_per_s", "#aec7e8", "//"),
            ("spread", "rps", "#ff7f0e", None),
            ("spread", "persisted_views_per_s", "#ffbb78", "//"),
        ]
    ):
        xs = [j + (i - 1.5) * width for j in range(len(names))]
        ys = [_get(v, n, dist, key) or 0 for n in names]
        label = f"{dist} {'req/s' if key == 'rps' else 'persisted views/s'}"
        ax.bar(xs, ys, width, label=label, color=color, hatch=hatch, edgecolor="white")
    # two lines for the long names, which would run into each other on one
    ax.set_xticks(range(len(names)), [n.replace("_per_", "_\nper_") for n in names])
    ax.set_ylabel("per second")
    ax.set_title("HTTP: requests and views persisted per second")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    sizes = _get(results, "flush", "sizes") or {}
    labels = [f"{int(n):,}" for n in sizes]
    xs = range(len(labels))
    ax.bar(
        [x - 0.2 for x in xs],
        [s["flush_s"] * 1000 for s in sizes.values()],
        0.4,
        label="flush_all()",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [s["raw_unnest_s"] * 1000 for s in sizes.values()],
        0.4,
        label="raw UPDATE … unnest",
    )
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_xlabel("dirty counters")
    ax.set_ylabel("ms (log)")
    ax.set_title("Flush vs one raw statement")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    rows = _get(results, "memory", "by_shards") or []
    ax.bar(
        [str(r["shards"]) for r in rows],
        [r["bytes_per_counter"] for r in rows],
        color=["#2ca02c" if r["encoding"] == "listpack" else "#d62728" for r in rows],
    )
    for i, r in enumerate(rows):
        ax.text(i, r["bytes_per_counter"], r["encoding"], ha="center", va="bottom", fontsize=8)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("shards")
    ax.set_ylabel("bytes per pending counter")
    ax.set_title(f"Redis memory, {_get(results, 'memory', 'pending_counters') or 0:,} pending")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
