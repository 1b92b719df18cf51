"""The activity series (engine/activity.py): one sample per minute, whoever samples,
bounded and expiring; per-minute increments from the accepted counts; the last runs."""

from engine.activity import KEEP_MINUTES, MINUTE_MS, TTL_MS, Sample, series
from engine.stats import RUNS_KEPT
from tests.engine.conftest import seed

T0 = 1_800_000_000_000 // MINUTE_MS * MINUTE_MS  # a minute's start, ms


def sample(minute: float, accepted: int, pending: int = 0, lag_s=None) -> Sample:
    return Sample(int(T0 + minute * MINUTE_MS), {"ih": accepted}, pending, lag_s)


def test_processes_sampling_the_same_minute_keep_the_first_sample(make_counters):
    web, worker = make_counters(), make_counters()  # two processes of one scope
    kept = web.activity_series.record(sample(0.1, 10, pending=3))
    assert kept == [sample(0.1, 10, pending=3)]
    kept = worker.activity_series.record(sample(0.9, 25, pending=7))
    assert kept == [sample(0.1, 10, pending=3)]  # the minute had its sample
    kept = worker.activity_series.record(sample(1.2, 40))
    assert [s.accepted["ih"] for s in kept] == [10, 40]
    assert web.activity_series.has_minute(int(T0 + 1.5 * MINUTE_MS))
    assert not web.activity_series.has_minute(int(T0 + 2 * MINUTE_MS))


def test_the_series_keeps_a_bounded_number_of_minutes_and_expires(counters, r):
    for minute in range(3 * KEEP_MINUTES):
        kept = counters.activity_series.record(sample(minute, minute))
    assert len(kept) == KEEP_MINUTES + 1
    assert kept[0] == sample(2 * KEEP_MINUTES - 1, 2 * KEEP_MINUTES - 1)
    assert r.hlen(counters.keys.activity()) == KEEP_MINUTES + 1
    assert 0 < r.pttl(counters.keys.activity()) <= TTL_MS


def test_increments_per_minute_span_missing_minutes_and_survive_a_reset():
    kept = [sample(0, 100), sample(1, 160), sample(3, 280), sample(4, 30)]  # 2: nobody sampled
    now = sample(4.5, 42, pending=9, lag_s=1.5)
    columns = series(kept, now, minutes=60)
    assert columns["t"] == [(T0 + m * MINUTE_MS) / 1000 for m in (0, 1, 3, 4, 4.5)]
    # 60 in minute 1; 120 over minutes 2-3 is 60 a minute; Redis came back older: 30
    # counted from zero; the last point is the minute so far, not scaled
    assert columns["accepted"] == {"ih": [None, 60, 60, 30, 12]}
    assert columns["pending"] == [0, 0, 0, 0, 9]
    assert columns["lag_s"] == [None, None, None, None, 1.5]


def test_the_series_covers_the_last_minutes_only():
    kept = [sample(m, 10 * m) for m in range(100)]
    columns = series(kept, sample(100.5, 1010), minutes=60)
    assert columns["t"][0] == (T0 + 41 * MINUTE_MS) / 1000  # 100.5 - 60 = 40.5: from 41
    assert columns["accepted"]["ih"][0] == 10  # from the sample before it, not None
    assert columns["accepted"]["ih"][-1] == 20


def test_activity_names_counters_and_its_last_point_counts_the_minute_so_far(make_counters, sql):
    web, other = make_counters(), make_counters()
    (item,) = seed(sql, "items", 1)
    web.incr_many([("items.hits", item, 1)] * 3)
    first = web.activity()
    assert set(first["accepted"]) == {"items.hits"} and first["pending"][-1] == 1
    web.incr_many([("items.hits", item, 1)] * 5 + [("items.likes", item, 2)])
    columns = other.activity()  # another process sees the same series
    assert columns["accepted"]["items.hits"][-1] == 5
    assert columns["accepted"]["items.likes"][-1] == 1  # one increment of 2
    assert columns["lag_s"][-1] >= 0
    web.flush_all()
    assert web.activity()["pending"][-1] == 0 and web.activity()["lag_s"][-1] is None


def test_record_activity_takes_a_minute_once(make_counters):
    web, worker = make_counters(), make_counters()
    taken = [web.record_activity(), worker.record_activity(), web.record_activity()]
    # one of them per minute (two if a minute began between the calls)
    assert 1 <= sum(taken) <= 2 and taken[-1] is False


def test_the_last_busy_flushes_and_reconciles_are_kept_newest_first(counters, sql):
    items = seed(sql, "items", RUNS_KEPT + 2)
    for n in range(1, len(items) + 1):
        counters.incr_many([("items.hits", item, 1) for item in items[:n]])
        counters.flush_all()  # flushes n counters
    counters.flush_all()  # idle: not a run worth keeping
    counters.reconcile()
    runs = counters.recent_runs(limit=RUNS_KEPT + 10)
    assert [f["flushed"] for f in runs["flush"]] == list(range(len(items), 2, -1))
    assert len(runs["reconcile"]) == 1 and runs["reconcile"][0]["fixed"] == 0
    assert counters.recent_runs(limit=3)["flush"] == runs["flush"][:3]
