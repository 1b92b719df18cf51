"""The view policy (engine/policy.py) against real Redis and Postgres: a visitor counts
once per window, crawlers apart, an author's own views not at all, unique viewers kept
in Postgres across a Redis wipe, and every accepted view applied exactly once under a
flusher killed mid-flush."""

import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from engine import Counters, Visit
from engine.visitors import is_crawler, visit_of
from harness.agents import BROWSER as CHROME
from harness.agents import GOOGLEBOT
from tests.engine.conftest import POLICY_REGISTRY, seed, sql_statements, stored
from tests.engine.test_faults import wait_out_victim_lock
from tests.servers import ROOT

VIEWS = "pages.views"


@pytest.fixture
def make(r, sql):
    def build(**kw) -> Counters:
        kw.setdefault("shards", 4)
        return Counters(r, sql, POLICY_REGISTRY, **kw)

    return build


@pytest.fixture
def pages(sql):
    return seed(sql, "pages", 3)


def live(counters, row_id: int) -> dict:
    return counters.read("pages", [row_id])[row_id]


def held(counters) -> dict:
    return counters.report()["held_back"].get(VIEWS, {})


def test_a_visitor_counts_once_per_window_and_once_among_unique_viewers(make, pages, sql):
    counters = make()
    page = pages[0]
    for _ in range(3):
        assert counters.view(VIEWS, page, visit=Visit("c:alice")) is True
    assert counters.view(VIEWS, page, visit=Visit("c:bob")) is True
    assert counters.view(VIEWS, pages[1], visit=Visit("c:alice")) is True  # another row
    assert live(counters, page) == {"views": 2, "bot_views": 0, "uniques": 2}
    assert held(counters) == {"deduped": 2}
    counters.flush_all()
    assert stored(sql, "pages", "views") == {pages[0]: 2, pages[1]: 1, pages[2]: 0}
    assert stored(sql, "pages", "uniques") == {pages[0]: 2, pages[1]: 1, pages[2]: 0}
    assert live(counters, page) == {"views": 2, "bot_views": 0, "uniques": 2}


def test_a_view_after_the_window_counts_again_and_remembered_pairs_expire(make, pages, r):
    window_s = 1
    counters = make(view_window_s=window_s)
    page = pages[0]
    assert counters.view(VIEWS, page, visit=Visit("c:alice"))
    seen = [k for k in r.scan_iter(match=b"*:seen:*")]
    assert seen and all(0 < r.ttl(k) <= 2 * window_s for k in seen)
    assert counters.view(VIEWS, page, visit=Visit("c:alice"))
    assert live(counters, page)["views"] == 1
    # remembered until the end of the next slot: gone 2 windows after the counted view
    time.sleep(2 * window_s + 0.1)
    assert counters.view(VIEWS, page, visit=Visit("c:alice"))
    assert live(counters, page)["views"] == 2
    assert live(counters, page)["uniques"] == 1  # the same visitor, still one of them
    assert held(counters) == {"deduped": 1}


def test_crawlers_count_apart_and_every_crawler_view_counts(make, pages, sql):
    counters = make()
    bot = visit_of(GOOGLEBOT, "10.0.0.1", "salt")
    assert bot.bot and not visit_of(CHROME, "10.0.0.1", "salt").bot
    for _ in range(3):
        assert counters.view(VIEWS, pages[0], visit=bot)
    assert live(counters, pages[0]) == {"views": 0, "bot_views": 3, "uniques": 0}
    assert held(counters) == {"bot": 3}
    counters.flush_all()
    assert stored(sql, "pages", "bot_views")[pages[0]] == 3
    assert stored(sql, "pages", "views")[pages[0]] == 0


def test_the_crawler_list_comes_from_the_library_and_is_cached():
    is_crawler.cache_clear()
    assert is_crawler(GOOGLEBOT) and is_crawler("curl/8.5.0")
    assert not is_crawler(CHROME) and not is_crawler("")
    assert is_crawler(GOOGLEBOT)
    assert is_crawler.cache_info().hits == 1


def test_an_authors_own_view_adds_nothing(make, pages, r):
    counters = make()
    mine = visit_of(CHROME, "10.0.0.1", "salt", user_id=7, author_id=7)
    theirs = visit_of(CHROME, "10.0.0.1", "salt", user_id=8, author_id=7)
    assert mine.own and not theirs.own
    assert counters.view(VIEWS, pages[0], visit=mine)
    assert live(counters, pages[0]) == {"views": 0, "bot_views": 0, "uniques": 0}
    assert counters.view(VIEWS, pages[0], visit=theirs)
    assert live(counters, pages[0]) == {"views": 1, "bot_views": 0, "uniques": 1}
    assert held(counters) == {"self": 1}


def test_raw_counts_every_view_and_keeps_nothing_of_the_policy(make, pages, r):
    counters = make(view_policy="raw")
    for visit in (
        Visit("c:alice"),
        Visit("c:alice"),
        Visit("c:x", bot=True),
        Visit("u:1", own=True),
    ):
        assert counters.view(VIEWS, pages[0], visit=visit)
    assert live(counters, pages[0]) == {"views": 4, "bot_views": 0, "uniques": 0}
    assert list(r.scan_iter(match=b"*:seen:*")) == []
    assert list(r.scan_iter(match=b"*:uv:*")) == []
    assert held(counters) == {}


def test_the_flush_merges_unique_viewers_only_of_rows_redis_has_them_for(make, pages, sql):
    """Views counted raw add no visitor: their flush reads no stored HyperLogLog."""
    raw, dedupe = make(view_policy="raw"), make()
    for row in pages:
        raw.view(VIEWS, row, visit=Visit(f"c:{row}"))
    with sql_statements(sql) as sent:
        raw.flush_all()
    assert not [s for s in sent if "counter_uniques" in s]
    dedupe.view(VIEWS, pages[0], visit=Visit("c:bob"))
    raw.view(VIEWS, pages[1], visit=Visit("c:bob"))
    with sql_statements(sql) as sent:
        dedupe.flush_all()
    reads = [s for s in sent if s.lstrip().startswith("SELECT") and "counter_uniques" in s]
    assert len(reads) == 1
    assert stored(sql, "pages", "uniques") == {pages[0]: 1, pages[1]: 0, pages[2]: 0}
    assert stored(sql, "pages", "views") == {pages[0]: 2, pages[1]: 2, pages[2]: 1}


def test_a_view_of_a_row_that_does_not_exist_leaves_no_trace(make, pages, r):
    counters = make()
    counters.ensure_index()
    before = set(r.keys())
    for visit in (Visit("c:alice"), Visit("c:bot", bot=True), Visit("u:1", own=True)):
        assert counters.view(VIEWS, 999_999, visit=visit) is False
        assert counters.view_and_read(VIEWS, 999_999, visit=visit) is None
    assert set(r.keys()) == before


def test_view_and_read_counts_under_the_policy_and_returns_the_live_counts(make, pages):
    counters = make()
    counts, _ = counters.view_and_read(VIEWS, pages[0], visit=Visit("c:alice"))
    assert counts == {"views": 1, "bot_views": 0, "uniques": 1}
    counts, _ = counters.view_and_read(VIEWS, pages[0], visit=Visit("c:alice"))
    assert counts == {"views": 1, "bot_views": 0, "uniques": 1}
    counts, _ = counters.view_and_read(VIEWS, pages[0], visit=Visit("c:b", bot=True))
    assert counts == {"views": 1, "bot_views": 1, "uniques": 1}


def test_unique_viewers_survive_a_redis_wipe_and_never_go_backwards(make, pages, sql, r):
    counters = make()
    page = pages[0]
    for i in range(200):
        counters.view(VIEWS, page, visit=Visit(f"c:v{i}"))
    counters.flush_all()
    before = stored(sql, "pages", "uniques")[page]
    assert abs(before - 200) <= 4  # HyperLogLog, 0.81% standard error
    r.flushdb()  # Redis loses everything: the HyperLogLog, the index, the layout
    counters = make()
    assert live(counters, page)["uniques"] == before
    counters.view(VIEWS, page, visit=Visit("c:newcomer"))
    assert live(counters, page)["uniques"] >= before
    counters.flush_all()
    after = stored(sql, "pages", "uniques")[page]
    assert after >= before and abs(after - 201) <= 4
    # the stored HyperLogLog went back into Redis: old visitors are not new again
    assert r.pfcount(counters.keys.uniques(page, "gv")) == after
    with sql.connect() as conn:
        estimate = conn.execute(sa.text("SELECT estimate FROM counter_uniques")).scalar_one()
    assert estimate == after
    counters.flush_all()  # a flush with nothing new changes nothing
    assert stored(sql, "pages", "uniques")[page] == after


def run_policy_victim(db_url: str, url: str, stage: str) -> int:
    command = [sys.executable, "-m", "tests.engine.flush_victim", db_url, url, "2", stage]
    proc = subprocess.run(command + ["policy"], cwd=ROOT, timeout=60)
    return proc.returncode


@pytest.mark.parametrize("stage", ["claimed", "applied", "committed"])
def test_accepted_views_apply_exactly_once_when_the_flusher_is_killed(
    stage, make, pages, sql, engine_db, victim_redis, r
):
    counters = make(shards=2)
    visitors = [f"c:v{i}" for i in range(30)]
    for visitor in visitors:  # each views each page twice: one counts
        for page in pages:
            counters.view(VIEWS, page, visit=Visit(visitor))
            counters.view(VIEWS, page, visit=Visit(visitor))
    counters.view(VIEWS, pages[0], visit=Visit("c:crawler", bot=True))
    counters.view(VIEWS, pages[1], visit=Visit("u:1", own=True))
    assert run_policy_victim(engine_db.url, victim_redis[0], stage) == -signal.SIGKILL
    for page in pages:  # views keep coming while the claim is orphaned: repeats and new
        counters.view(VIEWS, page, visit=Visit("c:v0"))
        counters.view(VIEWS, page, visit=Visit("c:late"))
    wait_out_victim_lock(counters, r)
    counters.flush_all()
    assert counters.flush_all().counters == 0  # a redelivered flush finds nothing
    assert stored(sql, "pages", "views") == dict.fromkeys(pages, 31)
    assert stored(sql, "pages", "bot_views") == {pages[0]: 1, pages[1]: 0, pages[2]: 0}
    uniques = stored(sql, "pages", "uniques")
    assert all(abs(n - 31) <= 1 for n in uniques.values()), uniques
    assert held(counters) == {"deduped": 30 * 3 + 3, "bot": 1, "self": 1}
