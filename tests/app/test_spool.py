"""The view spool (COUNTERS_COALESCE_SPOOL_DIR): tallied views are in a file before they
are answered, a dead process' file is taken over by a survivor, pushes are fenced so
none adds twice, torn records are ignored, fences of deleted spools are swept."""

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine import spool as spooling
from tests.app.conftest import REDIS_DB, create, process_env
from tests.app.test_coalesce import NEVER_MS, views
from tests.proxy import proxied
from tests.servers import ROOT, redis_url

VICTIM = Path(__file__).with_name("spool_victim.py")


@pytest.fixture
def spooling_app(make_app, tmp_path):
    """``spooling_app(**config)``: an app with the spool on, its client and coalescer."""

    def make(**config):
        app = make_app(
            COUNTERS_COALESCE_MS=config.pop("interval_ms", NEVER_MS),
            COUNTERS_COALESCE_SPOOL_DIR=str(tmp_path / "spool"),
            **config,
        )
        return app.test_client(), app.extensions["counters"].coalescer

    return make


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{spooling.SUFFIX}"))


def spooled(path: Path) -> list[tuple[str, int, int]]:
    contents = spooling.parse(path.read_bytes())
    return [(code, row_id, n) for _, code, row_id, n in contents.views]


def fence_key(counters, shard: int) -> str:
    return spooling.Pusher(counters).fence_key(shard)


def fences(r, counters, spool: str) -> dict[int, int]:
    found = {}
    for s in range(counters.shards):
        value = r.hget(fence_key(counters, s), spool)
        if value is not None:
            found[s] = int(value)
    return found


def test_views_are_in_the_spool_before_they_are_answered(
    client, user, counters, spooling_app, tmp_path
):
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(6):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    (path,) = spool_files(tmp_path / "spool")
    code = counters.registry.get("posts.view_count").code
    assert spooled(path) == [(code, post, 1)] * 5  # the first view was synchronous
    assert views(counters, post) == 1
    assert coalescer.push() == 5
    assert views(counters, post) == 6
    assert coalescer.push() == 0
    coalescer.close()  # everything is in: the file goes
    assert spool_files(tmp_path / "spool") == []


def test_the_timer_pushes_and_checkpoints(client, user, counters, spooling_app, tmp_path, r):
    post = create(client, user)
    page, coalescer = spooling_app(interval_ms=20)
    for _ in range(10):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    from tests.processes import wait_for

    wait_for("the pushed views", lambda: views(counters, post) == 10, 10)
    (path,) = spool_files(tmp_path / "spool")
    wait_for("a checkpoint", lambda: spooling.parse(path.read_bytes()).checkpoint > 44, 10)


@pytest.fixture
def redis_proxy():
    proxy, url = proxied(redis_url(REDIS_DB), 6379)
    yield proxy, url
    proxy.close()


def test_a_push_whose_reply_is_lost_is_sent_again_and_counts_once(
    client, user, counters, spooling_app, redis_proxy
):
    proxy, url = redis_proxy
    post, other = create(client, user), create(client, user, title="Other")
    page, coalescer = spooling_app(COUNTERS_REDIS_URL=url)
    for row in (post, other):
        for _ in range(4):
            assert page.post(f"/api/posts/{row}/view").status_code == 204
    # Redis runs the push's scripts, the proxy drops the connection before the replies
    proxy.lose_next_reply(lambda request: b"EVALSHA" in request)
    assert coalescer.push() == 0
    assert proxy.replies_lost == 1
    assert views(counters, post) == 4 and views(counters, other) == 4  # applied
    assert coalescer.push() == 6  # sent again: the fences say they are in
    assert views(counters, post) == 4 and views(counters, other) == 4
    assert coalescer.unknown == 0
    for _ in range(2):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.lose_next_reply(lambda request: b"EVALSHA" in request)
    assert coalescer.push() == 0
    for _ in range(3):  # views during the outage go synchronous (through the proxy)
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 2
    assert views(counters, post) == 9


def test_redis_down_keeps_the_views_in_the_spool(client, user, counters, spooling_app, redis_proxy):
    proxy, url = redis_proxy
    post = create(client, user)
    page, coalescer = spooling_app(COUNTERS_REDIS_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.cut()
    assert coalescer.push() == 0
    assert page.post(f"/api/posts/{post}/view").status_code == 503  # synchronous again
    proxy.restore()
    assert coalescer.push() == 3
    assert views(counters, post) == 4


def test_a_torn_tail_and_what_follows_a_corrupt_record_are_ignored(
    client, user, counters, tmp_path
):
    post = create(client, user)
    code = counters.registry.get("posts.view_count").code
    directory = tmp_path / "spool"
    directory.mkdir()
    token = spooling.dir_token(directory)
    torn = spooling.SpoolFile(directory, token, counters.scope, counters.shards)
    torn.append(spooling.record(code, post) * 3)
    torn.append(spooling.record(code, post)[:13])  # the kill came mid-write
    torn.abandon()
    corrupt = spooling.SpoolFile(directory, token, counters.scope, counters.shards)
    bad = bytearray(spooling.record(code, post))
    bad[-1] ^= 1
    corrupt.append(spooling.record(code, post) * 2 + bytes(bad) + spooling.record(code, post))
    corrupt.abandon()
    assert spooling.drain(counters, directory) == 5
    assert views(counters, post) == 5
    assert spool_files(directory) == []


def run_victim(app_db, directory: Path, *posts: int) -> None:
    """A real process that tallies views of ``posts``, pushes some, SIGKILLs itself."""
    victim = subprocess.run(
        [sys.executable, str(VICTIM), *map(str, posts)],
        env=process_env(app_db.url, COUNTERS_COALESCE_SPOOL_DIR=str(directory)),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr.decode()[-3000:]


def test_a_dead_process_spool_is_taken_over_by_a_live_process_thread(
    client, user, counters, spooling_app, app_db, tmp_path
):
    post, other = create(client, user), create(client, user, title="Other")
    directory = tmp_path / "spool"
    page, coalescer = spooling_app(interval_ms=20)
    assert page.post(f"/api/posts/{post}/view").status_code == 204  # starts the thread
    run_victim(app_db, directory, post, other)
    from tests.processes import wait_for

    # the victim: 1 synchronous + 4 pushed + 3 only in its spool, of each post
    wait_for("the orphan's views", lambda: views(counters, other) == 8, 10)
    assert views(counters, post) == 9
    assert spool_files(directory) == [coalescer.spool.path] and coalescer.adopted == 6


def test_a_new_process_takes_over_at_its_start_what_a_dead_one_left(
    client, user, counters, spooling_app, app_db, tmp_path
):
    post, other = create(client, user), create(client, user, title="Other")
    directory = tmp_path / "spool"
    run_victim(app_db, directory, post, other)
    assert views(counters, post) == 5 and views(counters, other) == 5
    (path,) = spool_files(directory)
    held = spooling.SpoolFile(directory, spooling.dir_token(directory), "x", 1)
    try:  # a spool whose owner lives is left alone
        assert spooling.take_over(spooling.Pusher(counters), held.path) is None
        assert held.path.exists()
    finally:
        held.delete()
    _, coalescer = spooling_app()
    assert coalescer.adopted == 6 and not path.exists()
    assert views(counters, post) == 8 and views(counters, other) == 8


def test_a_survivor_adds_only_what_the_dead_owner_had_not_pushed(
    client, user, counters, spooling_app, tmp_path, r
):
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    spool = coalescer.spool
    assert coalescer.push() == 3
    for _ in range(2):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    # the owner sends a push, then dies before it sees the reply (no checkpoint after)
    with coalescer.lock:
        tally, coalescer.tally = coalescer.tally, type(coalescer.tally)()
        batch = coalescer._batch(spool, tally)
    coalescer.pusher.push(batch)
    assert views(counters, post) == 6
    spool.abandon()
    coalescer.spool = None
    assert spooling.parse(spool.path.read_bytes()).checkpoint < spool.size
    assert spooling.drain(counters, tmp_path / "spool") == 0  # the fences say: all in
    assert views(counters, post) == 6
    assert fences(r, counters, spool.id) == {counters.keys.shard_of(post): spool.size}


def test_a_new_file_is_started_once_the_spool_is_full(
    client, user, counters, spooling_app, tmp_path, monkeypatch
):
    monkeypatch.setattr(spooling, "ROTATE_BYTES", spooling.HEADER_SIZE + 3 * 24)
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(5):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    first = coalescer.spool.path
    assert coalescer.push() == 4
    assert coalescer.spool.path != first and not first.exists()
    for _ in range(2):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 2
    assert views(counters, post) == 7


def test_fences_of_deleted_spools_are_swept_on_the_second_look(
    client, user, counters, spooling_app, tmp_path, r
):
    post = create(client, user)
    directory = tmp_path / "spool"
    page, coalescer = spooling_app()
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    done = coalescer.spool
    assert coalescer.push() == 2
    coalescer.close()  # all in: its file goes, its fence stays for now
    assert not done.path.exists() and fences(r, counters, done.id)
    live = spooling.SpoolFile(directory, coalescer.token, counters.scope, counters.shards)
    live.append(spooling.record(counters.registry.get("posts.view_count").code, post))
    pusher = coalescer.pusher
    contents = spooling.parse(live.path.read_bytes())
    assert spooling.push_contents(pusher, live.id, contents, live.fd) == 1
    foreign = "someone-else-1-abcd"  # another host's spool: not this directory's to sweep
    r.hset(fence_key(counters, 0), foreign, 44)
    seen = spooling.sweep_fences(pusher, directory, coalescer.token, set())
    assert seen == {done.id} and fences(r, counters, done.id)  # first look: kept
    assert spooling.sweep_fences(pusher, directory, coalescer.token, seen) == set()
    assert fences(r, counters, done.id) == {}
    assert fences(r, counters, live.id) and fences(r, counters, foreign)
    live.delete()
    assert views(counters, post) == 4


def test_a_row_deleted_while_known_loses_its_spooled_views_at_push(
    client, user, counters, spooling_app
):
    post = create(client, user)
    page, coalescer = spooling_app()
    assert page.post(f"/api/posts/{post}/view").status_code == 204
    response = client.delete(f"/api/posts/{post}", headers={"Authorization": f"Bearer {user}"})
    assert response.status_code == 204
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 0
    assert coalescer.dropped == 4
    assert page.post(f"/api/posts/{post}/view").status_code == 404


def test_after_redis_lost_the_index_postgres_is_asked_and_the_push_is_still_fenced(
    client, user, counters, spooling_app, r
):
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert r.delete(counters.keys.exists(counters.keys.shard_of(post), "posts")) == 1
    assert coalescer.push() == 2
    assert views(counters, post) == 3 and coalescer.dropped == 0
    assert os.path.exists(coalescer.spool.path)


def test_a_fence_redis_lost_is_followed_from_where_it_went_back_to(
    client, user, counters, spooling_app, r
):
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 2
    shard = counters.keys.shard_of(post)
    assert r.delete(fence_key(counters, shard)) == 1  # as a Redis restarted empty
    for _ in range(2):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 0  # out of step: the fence is behind the part
    assert coalescer.push() == 2  # sent after the fence Redis has now
    assert views(counters, post) == 5
    last_view = spooling.parse(coalescer.spool.path.read_bytes()).views[-1][0]
    assert fences(r, counters, coalescer.spool.id) == {shard: last_view + spooling.RECORD_SIZE}


def test_the_fence_adds_a_range_once_and_refuses_one_out_of_step(client, user, counters):
    post = create(client, user)
    code = counters.registry.get("posts.view_count").code
    pusher, shard = spooling.Pusher(counters), counters.keys.shard_of(post)

    def part(follows: int, upto: int, n: int) -> spooling.Part:
        return spooling.Part("fence-test", shard, follows, upto, Counter({(code, post): n}))

    first, wider, again, next_ = (
        part(0, 100, 2),
        part(0, 200, 5),
        part(0, 100, 2),
        part(100, 200, 3),
    )
    pusher.push([first])
    pusher.push([wider, again])
    assert (first.status, wider.status, again.status) == (
        spooling.Status.ADDED,
        spooling.Status.OUT_OF_STEP,
        spooling.Status.ALREADY,
    )
    assert wider.fence == again.fence == 100
    pusher.push([next_])
    assert next_.status is spooling.Status.ADDED
    assert views(counters, post) == 5


def test_a_fence_moved_behind_the_owners_back_is_read_again_from_the_spool(
    client, user, counters, spooling_app
):
    post = create(client, user)
    page, coalescer = spooling_app()
    for _ in range(5):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    spool = coalescer.spool
    mid = spooling.HEADER_SIZE + 2 * spooling.RECORD_SIZE
    contents = spooling.parse(spool.path.read_bytes())
    # someone else pushes the first two views of this live process' spool
    parts, _, _ = spooling.unpushed(coalescer.pusher, spool.id, contents, mid)
    coalescer.pusher.push(parts)
    assert views(counters, post) == 3
    assert coalescer.push() == 0  # out of step: the part is rebuilt from the file
    assert coalescer.push() == 2
    assert views(counters, post) == 5


def test_spooled_views_that_need_postgres_wait_while_it_is_unreachable(
    client, user, counters, spooling_app, r, pg_proxy
):
    proxy, url = pg_proxy
    post = create(client, user)
    page, coalescer = spooling_app(DATABASE_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    r.delete(counters.keys.exists(counters.keys.shard_of(post), "posts"))
    proxy.cut()  # the push must ask Postgres whether the row exists, and cannot
    assert coalescer.push() == 0
    assert views(counters, post) == 1 and coalescer.dropped == 0
    proxy.restore()
    assert coalescer.push() == 3
    assert views(counters, post) == 4


def test_a_maybe_added_push_behind_a_fence_that_went_back_is_counted_unknown(
    client, user, counters, spooling_app, redis_proxy, r
):
    """Redis ran the push, the reply was lost, then Redis went back to before the fence
    (here: the fence alone is lost, the views stay, as if flushed before the restore):
    sending the push again could count it twice, so it is counted as unknown."""
    proxy, url = redis_proxy
    post = create(client, user)
    page, coalescer = spooling_app(COUNTERS_REDIS_URL=url)
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 2
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.lose_next_reply(lambda request: b"EVALSHA" in request)
    assert coalescer.push() == 0
    assert views(counters, post) == 6
    assert r.delete(fence_key(counters, counters.keys.shard_of(post))) == 1
    assert coalescer.push() == 0
    assert views(counters, post) == 6 and coalescer.unknown == 3
    assert counters.shared_stats()["totals"]["views_unknown"] == 3
    assert coalescer.push() == 0  # Redis answers: views are tallied again
    assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert views(counters, post) == 6 and coalescer.push() == 1
    assert views(counters, post) == 7


@pytest.mark.parametrize("restarted", [False, True], ids=["same-redis", "redis-restarted"])
def test_what_a_dead_process_had_sent_to_a_redis_since_restarted_counts_as_unknown(
    client, user, counters, tmp_path, restarted
):
    """The owner wrote its intent, sent three views, died; the fence is not in Redis.
    The same Redis: the send never arrived, they are pushed. A Redis that restarted
    since (its identity changed): they may have been added and flushed before it went
    back, so they count as unknown; the two never sent are pushed either way."""
    post = create(client, user)
    code = counters.registry.get("posts.view_count").code
    directory = tmp_path / "spool"
    directory.mkdir()
    pusher = spooling.Pusher(counters)
    identity = pusher.identity() + (1 if restarted else 0)
    owner = spooling.SpoolFile(
        directory, spooling.dir_token(directory), counters.scope, counters.shards
    )
    owner.append(spooling.record(code, post) * 3)
    owner.append(spooling.intent(owner.size, identity))
    owner.append(spooling.record(code, post) * 2)
    owner.abandon()
    assert spooling.drain(counters, directory) == (2 if restarted else 5)
    assert views(counters, post) == (2 if restarted else 5)
    assert counters.shared_stats()["totals"]["views_unknown"] == (3 if restarted else 0)


def test_a_maybe_added_push_is_not_sent_again_to_a_redis_that_restarted(
    client, user, counters, spooling_app, redis_proxy, monkeypatch
):
    """Redis ran the push, the reply was lost, and Redis restarted (its identity
    changed): it may have come back from before the push while a flush had applied it,
    so the push is counted as unknown, not sent again."""
    proxy, url = redis_proxy
    post = create(client, user)
    page, coalescer = spooling_app(COUNTERS_REDIS_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.lose_next_reply(lambda request: b"EVALSHA" in request)
    assert coalescer.push() == 0
    real = coalescer.pusher.identity()
    monkeypatch.setattr(coalescer.pusher, "identity", lambda: real + 1)
    assert coalescer.push() == 0
    assert views(counters, post) == 4 and coalescer.unknown == 3
    assert coalescer.push() == 0  # Redis answers: views are tallied again
    assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert coalescer.push() == 1
    assert views(counters, post) == 5


def test_a_part_waiting_for_postgres_holds_back_the_next_of_its_shard(
    client, user, counters, spooling_app, r, pg_proxy
):
    proxy, url = pg_proxy
    post = create(client, user)
    page, coalescer = spooling_app(DATABASE_URL=url)
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    r.delete(counters.keys.exists(counters.keys.shard_of(post), "posts"))
    proxy.cut()
    assert coalescer.push() == 0  # waits for Postgres
    for _ in range(3):  # still known: tallied, a second part of the same shard
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.restore()
    assert coalescer.push() == 2  # the first part; the second was out of step behind it
    assert coalescer.push() == 3
    assert views(counters, post) == 6 and coalescer.unknown == 0
