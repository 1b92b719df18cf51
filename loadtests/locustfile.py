"""Locust users for the counter engine's reference app (driven by ``python -m loadtests``).

Each user registers at start (``POST /api/users``), keeps its token, then mixes page
views and view beacons on a Zipf-skewed set of posts and articles (a few very hot),
likes/unlikes, collects/uncollects, shares, comment likes on both comment kinds,
comments, count reads and the post list.

Every request that moves a counter is logged by :class:`loadtests.accounting.EventLog`
before it is sent and again with its status, so the runner can check Postgres
against what the API acknowledged. Responses are checked with ``catch_response``:
an unexpected status, or a live count that contradicts what this user already
knows (G3: its own views and likes), is a Locust failure.

Environment: ``LOADTEST_SEED`` (seed.json written by the runner), ``LOADTEST_EVENTS``
(folder for the event logs), ``LOADTEST_WAIT`` (``min,max`` seconds between tasks),
``LOADTEST_REDIS_ROLLBACK=1`` (see :data:`ROLLBACK`), ``LOADTEST_VISITORS=1`` (see
:data:`VISITORS`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from harness.agents import BROWSER, GOOGLEBOT
from loadtests.accounting import ABSENT, PRESENT, UNKNOWN, EventLog

ZIPF_S = 1.1  # skew: with 200 posts the hottest gets ~20% of the traffic
REDUNDANT_TOGGLE_P = 0.1  # share of toggles that repeat the current state (200 / 404)
COLLECTION = {"post": "posts", "article": "articles"}
COMMENT_COUNTS = {"comment": "comments", "post_comment": "post-comments"}


def _load_seed() -> dict:
    path = os.environ.get("LOADTEST_SEED")
    if not path:
        # Imported outside the runner (e.g. `locust --help`): an empty seed.
        return {"posts": [], "articles": [], "comments": [], "post_comments": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Zipf:
    """Pick ids with probability proportional to 1 / rank**s (ranks in a fixed shuffle)."""

    def __init__(self, ids: list[int], s: float = ZIPF_S, seed: int = 7) -> None:
        self.ids = list(ids)
        random.Random(seed).shuffle(self.ids)
        self.cum = list(itertools.accumulate(1.0 / (k**s) for k in range(1, len(self.ids) + 1)))

    def pick(self) -> int:
        return random.choices(self.ids, cum_weights=self.cum)[0]


SEED = _load_seed()
PICK = {
    "post": Zipf(SEED["posts"], seed=1),
    "article": Zipf(SEED["articles"], seed=2),
    "comment": Zipf(SEED["comments"], seed=3),
    "post_comment": Zipf(SEED["post_comments"], seed=4),
}
_wait = [float(x) for x in os.environ.get("LOADTEST_WAIT", "0.5,2").split(",")]

# --redis-rollback: the counter Redis is SIGKILLed and comes back from an older dump.
# Its 503s while it is down are answers (not failures), live counts may go back (lost
# views, action deltas until reconcile), and users also create posts and view them.
ROLLBACK = os.environ.get("LOADTEST_REDIS_ROLLBACK") == "1"
# --visitors: the site counts views under the view policy. Each user views as one of its
# own few visitors (a vid cookie, a browser's User-Agent), so it repeats itself on hot
# targets, or as a crawler; the runner checks view_count against the distinct
# (visitor, target) pairs, bot_view_count against the crawler views, unique_viewers
# against the distinct visitors.
VISITORS = os.environ.get("LOADTEST_VISITORS") == "1"
VISITORS_PER_USER = 3
BOT_VIEW_P = 0.1
NEW_POST_VIEW_P = 0.3  # share of post views that go to one of the latest new posts
NEW_POSTS_VIEWED = 10
new_posts: list[int] = []  # created by this process's users, newest last

_log: EventLog | None = None


def event_log() -> EventLog:
    """This process's log (one per process, so ``locust --processes`` works)."""
    global _log
    if _log is None or _log.path.stem != f"events-{os.getpid()}":
        _log = EventLog(os.environ.get("LOADTEST_EVENTS", "loadtests/out/events"))
    return _log


# Locust stops a user that is sleeping by killing its greenlet asynchronously, so a user
# whose sleep just ended can start a request and lose it to the kill (an "unknown").
# test_stopping fires before any user is stopped: from then on, nothing new is sent.
_stopping = False


@events.test_stopping.add_listener
def _stop_sending(**_kw) -> None:
    global _stopping
    _stopping = True


@events.quitting.add_listener
def _close_log(**_kw) -> None:
    if _log is not None:
        _log.close()


def judge(resp, expected: tuple[int, ...], check=None) -> bool:
    """Mark a response: a success only for an expected status whose body passes ``check``
    (a function returning an error message, or None when all is well)."""
    if ROLLBACK and resp.status_code == 503:
        resp.success()  # the counter Redis is down: refused, changed nothing
        return False
    if resp.status_code not in expected:
        resp.failure(_failure(resp, expected))
        return False
    try:
        problem = check(resp) if check is not None else None
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"unexpected body ({exc!r}): {(resp.text or '')[:200]}"
    if problem:
        resp.failure(problem)
        return False
    resp.success()
    return True


def _failure(resp, expected: tuple[int, ...]) -> str:
    if resp.status_code == 0:
        return f"no response: {resp.error!r}"
    want = "/".join(map(str, expected))
    return f"expected {want}, got {resp.status_code}: {(resp.text or '')[:200]}"


def _check_list(resp) -> str | None:
    items = resp.json()["items"]
    ids = [item["id"] for item in items]
    if not items or ids != sorted(ids, reverse=True):
        return f"post list empty or not newest first: {ids}"
    if not ROLLBACK and any(v < 0 for item in items for v in item["counts"].values()):
        return f"negative count in the post list: {(resp.text or '')[:200]}"
    return None


class CommunityUser(FastHttpUser):
    wait_time = between(*_wait)
    network_timeout = 30.0  # s; a request slower than this is "unknown", not counted
    connection_timeout = 10.0

    user_id: int | None = None
    token: str | None = None

    def on_start(self) -> None:
        self.toggles: dict[tuple[str, str, int], str] = {}
        self.seen_views: dict[tuple[str, int], int] = {}
        self.vids = [f"lt{uuid.uuid4().hex}" for _ in range(VISITORS_PER_USER)]
        self.visited: set[tuple[str, str, int]] = set()  # (vid, tt, id) sent
        for _ in range(5):
            name = f"lt_{uuid.uuid4().hex[:24]}"
            with self.client.post(
                "/api/users", json={"username": name}, name="POST /api/users", catch_response=True
            ) as resp:
                if not judge(resp, (201,), lambda r: None if r.json()["token"] else "no token"):
                    continue
                body = resp.json()
                self.user_id, self.token = body["id"], body["token"]
                self.auth = {"Authorization": f"Bearer {self.token}"}
                return
        raise RuntimeError("could not register a user")

    # -- helpers -------------------------------------------------------------

    def _counted(
        self, op, tt, tid, method, path, name, expected, check=None, visitor=None, **kw
    ) -> int:
        """Send a request that moves a counter, logging it before and after; returns its status.

        See :func:`judge` for ``expected`` and ``check``.
        """
        if _stopping:
            raise StopUser()
        log = event_log()
        n = log.sent(op, tt, tid, self.user_id, visitor)
        with self.client.request(method, path, name=name, catch_response=True, **kw) as resp:
            log.answered(n, resp.status_code)
            judge(resp, expected, check)
            return resp.status_code

    def _check_counts(self, tt: str, tid: int, counts: dict, own_view: bool) -> str | None:
        """What this user knows bounds the live counts from below (G3)."""
        if ROLLBACK:
            return None
        key = (tt, tid)
        floor = self.seen_views.get(key, 0) + (1 if own_view else 0)
        if counts["view_count"] < floor:
            return f"view_count {counts['view_count']} < {floor} already seen or made"
        self.seen_views[key] = counts["view_count"]
        for action, col in (("like", "likes_count"), ("collect", "collects_count")):
            if self.toggles.get((action, tt, tid)) == PRESENT and counts[col] < 1:
                return f"{col} is {counts[col]} while this user's {action} is in place"
        return None

    def _check_comment_likes(self, tt: str, tid: int, likes: int) -> str | None:
        if ROLLBACK:
            return None
        if self.toggles.get(("like", tt, tid)) == PRESENT and likes < 1:
            return f"likes_count is {likes} while this user's like is in place"
        return None

    # -- tasks ---------------------------------------------------------------

    def _target(self, tt: str) -> int:
        if ROLLBACK and tt == "post" and new_posts and random.random() < NEW_POST_VIEW_P:
            return random.choice(new_posts[-NEW_POSTS_VIEWED:])
        return PICK[tt].pick()

    def _viewer(self, tt: str, tid: int) -> tuple[str, dict, bool]:
        """(op, request options, whether the view must count) of one view."""
        if not VISITORS:
            return "view", {}, True
        vid = random.choice(self.vids)  # crawlers send one too: no vid is ever set here
        if random.random() < BOT_VIEW_P:
            return "bot_view", {"headers": {"User-Agent": GOOGLEBOT, "Cookie": f"vid={vid}"}}, False
        first = (vid, tt, tid) not in self.visited
        self.visited.add((vid, tt, tid))
        headers = {"User-Agent": BROWSER, "Cookie": f"vid={vid}"}
        return "view", {"headers": headers, "visitor": vid}, first

    def _page(self, tt: str) -> None:
        tid = self._target(tt)
        op, options, counts = self._viewer(tt, tid)
        self._counted(
            op,
            tt,
            tid,
            "GET",
            f"/api/{COLLECTION[tt]}/{tid}",
            f"GET /api/{COLLECTION[tt]}/[id]",
            (200,),
            check=lambda r: self._check_counts(tt, tid, r.json()["counts"], own_view=counts),
            **options,
        )

    def _beacon(self, tt: str) -> None:
        tid = self._target(tt)
        op, options, _ = self._viewer(tt, tid)
        path = f"/api/{COLLECTION[tt]}/{tid}/view"
        name = f"POST /api/{COLLECTION[tt]}/[id]/view"
        self._counted(op, tt, tid, "POST", path, name, (204,), **options)

    def _toggle(self, action: str, tt: str) -> None:
        tid = PICK[tt].pick()
        key = (action, tt, tid)
        state = self.toggles.get(key, ABSENT)
        if random.random() < REDUNDANT_TOGGLE_P and state != UNKNOWN:
            add = state == PRESENT  # ask for what is already there: 200 / 404
        else:
            add = state != PRESENT
        if add:
            expected = {UNKNOWN: (201, 200), PRESENT: (200,), ABSENT: (201,)}[state]
            status = self._counted(
                action,
                tt,
                tid,
                "POST",
                "/api/actions",
                f"POST /api/actions {action} {tt}",
                expected,
                json={"action_type": action, "target_type": tt, "target_id": tid},
                headers=self.auth,
            )
            done = status in (200, 201)
        else:
            expected = {UNKNOWN: (204, 404), PRESENT: (204,), ABSENT: (404,)}[state]
            status = self._counted(
                f"un{action}",
                tt,
                tid,
                "DELETE",
                f"/api/actions/{action}/{tt}/{tid}",
                f"DELETE /api/actions {action} {tt}",
                expected,
                headers=self.auth,
            )
            done = status in (204, 404)
        # Follow what the server said, even when it contradicts what we expected.
        if done:
            self.toggles[key] = PRESENT if add else ABSENT
        elif status == 0 or status >= 500:
            self.toggles[key] = UNKNOWN

    @task(22)
    def post_page(self) -> None:
        self._page("post")

    @task(26)
    def post_beacon(self) -> None:
        self._beacon("post")

    @task(8)
    def article_page(self) -> None:
        self._page("article")

    @task(10)
    def article_beacon(self) -> None:
        self._beacon("article")

    @task(5)
    def like_post(self) -> None:
        self._toggle("like", "post")

    @task(3)
    def like_article(self) -> None:
        self._toggle("like", "article")

    @task(3)
    def collect_post(self) -> None:
        self._toggle("collect", "post")

    @task(2)
    def collect_article(self) -> None:
        self._toggle("collect", "article")

    @task(3)
    def like_post_comment(self) -> None:
        self._toggle("like", "post_comment")

    @task(3)
    def like_article_comment(self) -> None:
        self._toggle("like", "comment")

    @task(3)
    def share(self) -> None:
        tt = random.choice(("post", "post", "article"))
        tid = PICK[tt].pick()
        self._counted(
            "share",
            tt,
            tid,
            "POST",
            "/api/actions",
            f"POST /api/actions share {tt}",
            (201,),
            json={"action_type": "share", "target_type": tt, "target_id": tid},
            headers=self.auth,
        )

    @task(2)
    def comment(self) -> None:
        tt = random.choice(("post", "article"))
        tid = PICK[tt].pick()
        self._counted(
            "comment",
            tt,
            tid,
            "POST",
            f"/api/{COLLECTION[tt]}/{tid}/comments",
            f"POST /api/{COLLECTION[tt]}/[id]/comments",
            (201,),
            json={"content": f"load comment {uuid.uuid4().hex[:8]}"},
            headers=self.auth,
        )

    @task(6)
    def read_counts(self) -> None:
        tt = random.choice(("post", "post", "article"))
        tid = PICK[tt].pick()
        path = f"/api/{COLLECTION[tt]}/{tid}/counts"
        name = f"GET /api/{COLLECTION[tt]}/[id]/counts"
        with self.client.get(path, name=name, catch_response=True) as resp:
            judge(resp, (200,), lambda r: self._check_counts(tt, tid, r.json(), own_view=False))

    @task(2)
    def read_comment_counts(self) -> None:
        tt = random.choice(("comment", "post_comment"))
        tid = PICK[tt].pick()
        path = f"/api/{COMMENT_COUNTS[tt]}/{tid}/counts"
        name = f"GET /api/{COMMENT_COUNTS[tt]}/[id]/counts"
        with self.client.get(path, name=name, catch_response=True) as resp:
            judge(
                resp, (200,), lambda r: self._check_comment_likes(tt, tid, r.json()["likes_count"])
            )

    @task(3)
    def list_posts(self) -> None:
        with self.client.get(
            "/api/posts?limit=20", name="GET /api/posts", catch_response=True
        ) as resp:
            judge(resp, (200,), _check_list)

    @task(4 if ROLLBACK else 0)
    def create_post(self) -> None:
        """A post that may exist only after the dump the counter Redis comes back from."""
        if _stopping:
            raise StopUser()
        body = {"title": f"new {uuid.uuid4().hex[:8]}", "content": "Created during the load."}
        with self.client.post(
            "/api/posts", json=body, headers=self.auth, name="POST /api/posts", catch_response=True
        ) as resp:
            if judge(resp, (201,), lambda r: None if r.json()["id"] > 0 else "no id"):
                log = event_log()
                log.answered(log.sent("create", "post", resp.json()["id"], self.user_id), 201)
                new_posts.append(resp.json()["id"])
