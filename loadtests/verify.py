"""Check the counters against the ledger of acknowledged requests and against their recounts.

Three independent views of the truth must agree on every seeded target:

* the ledger (what the API acknowledged, see ``accounting``);
* the exact recounts from ``user_actions``, ``comments``/``post_comments``,
  ``comment_likes``/``post_comment_likes`` (for every counter but views);
* the counter columns in Postgres after the flush, and the live counts the API
  returns before it (Postgres plus pending deltas).

The action rows themselves must also be exactly the likes and collects the users
left in place.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from .accounting import Ledger, Mismatch, compare
from .seed import Seed
from .stack import http

CONTENT_COLUMNS = (
    "view_count",
    "bot_view_count",
    "likes_count",
    "collects_count",
    "shares_count",
    "comments_count",
)
NO_RECOUNT = ("view_count", "bot_view_count")
# |unique_viewers - distinct visitors| allowed: HyperLogLog, 0.81% standard error
UNIQUES_TOLERANCE = 0.03
UNIQUES_SLACK = 2
CONTENT = (("post", "posts", "post_comments", "post_id"),)
CONTENT += (("article", "articles", "comments", "article_id"),)
COMMENTS = (("comment", "comments", "comment_likes", "comment_id", "article_id", "articles"),)
COMMENTS += (
    (
        "post_comment",
        "post_comments",
        "post_comment_likes",
        "post_comment_id",
        "post_id",
        "posts",
    ),
)
COMMENT_URL = {"comment": "comments", "post_comment": "post-comments"}
LIVE_THREADS = 8

Values = dict[tuple[str, str, int], int]  # (column, target_type, id) -> value


@dataclass
class Check:
    name: str
    checked: int = 0
    mismatches: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def line(self, limit: int = 10) -> str:
        head = f"{self.name}: {self.checked} checked, {len(self.mismatches)} wrong"
        return "\n".join([head, *(f"    {m}" for m in self.mismatches[:limit])])


def stored_counters(sql: sa.Engine, seed: Seed) -> Values:
    """Every counter column of the seeded rows, and of the comments on seeded content."""
    out: Values = {}
    ids = {"post": seed.posts, "article": seed.articles}
    with sql.connect() as conn:
        for tt, table, _ctable, _fk in CONTENT:
            cols = ", ".join(CONTENT_COLUMNS)
            rows = conn.execute(
                sa.text(f"SELECT id, {cols} FROM {table} WHERE id = ANY(:ids)"), {"ids": ids[tt]}
            )
            for row in rows:
                for col, value in zip(CONTENT_COLUMNS, row[1:], strict=True):
                    out[(col, tt, row[0])] = value
        for tt, table, _ltable, _lfk, parent_fk, parent in COMMENTS:
            parent_ids = ids["article" if parent == "articles" else "post"]
            rows = conn.execute(
                sa.text(f"SELECT id, likes_count FROM {table} WHERE {parent_fk} = ANY(:ids)"),
                {"ids": parent_ids},
            )
            for row in rows:
                out[("likes_count", tt, row[0])] = row[1]
    return out


def recounts(sql: sa.Engine, keys: Values) -> Values:
    """The exact recount of every counter in ``keys`` that has one (all but views)."""
    out: Values = {k: 0 for k in keys if k[0] not in NO_RECOUNT}
    column = {"like": "likes_count", "collect": "collects_count", "share": "shares_count"}
    with sql.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT action_type, target_type, target_id, count(*) FROM user_actions "
                "GROUP BY action_type, target_type, target_id"
            )
        )
        for action, tt, tid, n in rows:
            _set_if_known(out, (column[action], tt, tid), n)
        for tt, _table, ctable, fk in CONTENT:
            for tid, n in conn.execute(sa.text(f"SELECT {fk}, count(*) FROM {ctable} GROUP BY 1")):
                _set_if_known(out, ("comments_count", tt, tid), n)
        for tt, _table, ltable, lfk, _pfk, _parent in COMMENTS:
            for cid, n in conn.execute(sa.text(f"SELECT {lfk}, count(*) FROM {ltable} GROUP BY 1")):
                _set_if_known(out, ("likes_count", tt, cid), n)
    return out


def _set_if_known(out: Values, key, n: int) -> None:
    if key in out:
        out[key] = n


def action_rows(sql: sa.Engine) -> set[tuple[int, str, str, int]]:
    """Every like and collect in place: ``(user, action, target_type, id)``."""
    with sql.connect() as conn:
        rows = set(
            conn.execute(
                sa.text(
                    "SELECT user_id, action_type, target_type, target_id FROM user_actions "
                    "WHERE action_type IN ('like', 'collect')"
                )
            ).tuples()
        )
        for tt, _table, ltable, lfk, _pfk, _parent in COMMENTS:
            q = sa.text(f"SELECT user_id, {lfk} FROM {ltable}")
            rows |= {(u, "like", tt, cid) for u, cid in conn.execute(q)}
    return rows


def check_stored(ledger: Ledger, stored: Values) -> Check:
    bad, n = compare(ledger, stored, "postgres")
    return Check("Postgres counters == acknowledged requests", n, bad)


def check_recounts(stored: Values, exact: Values) -> Check:
    check = Check("Postgres counters == exact recount", len(exact))
    for key, value in sorted(exact.items()):
        if stored.get(key) != value:
            col, tt, tid = key
            check.mismatches.append(
                Mismatch("recount", f"{tt} {tid} {col}", str(value), stored.get(key))
            )
    return check


def check_rows(ledger: Ledger, rows: set, keys: Values) -> Check:
    """The like/collect rows on the run's targets == the toggles its users left in place
    (a toggle whose last request got no answer may go either way)."""
    targets = {(tt, tid) for _col, tt, tid in keys}
    present, maybe = ledger.present(), ledger.maybe()
    ours = {r for r in rows if (r[2], r[3]) in targets}
    check = Check("like/collect rows == toggles left in place", len(ours | present))
    for row in sorted(present - ours):
        check.mismatches.append(Mismatch("rows", str(row), "a row", "none"))
    for row in sorted(ours - present - maybe):
        check.mismatches.append(Mismatch("rows", str(row), "no row", "a row"))
    return check


def check_uniques(ledger: Ledger, sql: sa.Engine, seed: Seed) -> Check:
    """Under the view policy: each target's stored unique_viewers is within the
    HyperLogLog's tolerance of the distinct visitors the run acknowledged."""
    check = Check("unique_viewers (after the final flush) ~ distinct visitors")
    viewers = ledger.viewers()
    ids = {"post": seed.posts, "article": seed.articles}
    with sql.connect() as conn:
        for tt, table, _ctable, _fk in CONTENT:
            rows = conn.execute(
                sa.text(f"SELECT id, unique_viewers FROM {table} WHERE id = ANY(:ids)"),
                {"ids": ids[tt]},
            )
            for tid, value in rows:
                check.checked += 1
                bounds = viewers.get((tt, tid))
                lo, hi = (bounds.lo, bounds.hi) if bounds else (0, 0)
                slack = max(UNIQUES_SLACK, round(hi * UNIQUES_TOLERANCE))
                if not lo - slack <= value <= hi + slack:
                    expected = f"{lo}..{hi} ± {slack}"
                    check.mismatches.append(Mismatch("uniques", f"{tt} {tid}", expected, value))
    return check


# Each post's and article's views as its hourly and daily buckets add them up (G9).
BUCKET_SUMS = """SELECT row_id, sum(n) FROM (
        SELECT row_id, n FROM counter_hourly
        WHERE tbl = :tbl AND col = 'view_count' AND row_id = ANY(:ids)
        UNION ALL
        SELECT row_id, n FROM counter_daily
        WHERE tbl = :tbl AND col = 'view_count' AND row_id = ANY(:ids)
    ) AS b GROUP BY row_id"""


def check_buckets(sql: sa.Engine, seed: Seed) -> Check:
    """After the final flush, every post's and article's buckets sum to its view_count."""
    check = Check("view buckets (after the final flush): sum of buckets == view_count")
    ids = {"post": seed.posts, "article": seed.articles}
    with sql.connect() as conn:
        for tt, table, _ctable, _fk in CONTENT:
            params = {"tbl": table, "ids": ids[tt]}
            sums = dict(conn.execute(sa.text(BUCKET_SUMS), params).all())
            rows = conn.execute(
                sa.text(f"SELECT id, view_count FROM {table} WHERE id = ANY(:ids)"), params
            )
            for tid, views in rows:
                check.checked += 1
                if sums.get(tid, 0) != views:
                    check.mismatches.append(
                        Mismatch("buckets", f"{tt} {tid}", views, sums.get(tid, 0))
                    )
    return check


def window_views(base_url: str, seed: Seed) -> dict[tuple[str, int], int]:
    """Each post's and article's views over the last 7 days as the API reads them now
    (stored buckets plus the views still pending in Redis)."""
    targets = [("post", i) for i in seed.posts] + [("article", i) for i in seed.articles]

    def fetch(target):
        tt, tid = target
        url = f"{base_url}/api/{tt}s/{tid}/stats?window=7d"
        resp = http().get(url, timeout=30)
        resp.raise_for_status()
        return target, resp.json()["views"]

    with ThreadPoolExecutor(LIVE_THREADS) as pool:
        return dict(pool.map(fetch, targets))


def check_windows(before: dict, after: dict) -> Check:
    check = Check("7-day window views before the last flush == after it", len(before))
    for key in sorted(before):
        if after.get(key) != before[key]:
            tt, tid = key
            check.mismatches.append(Mismatch("window", f"{tt} {tid}", before[key], after.get(key)))
    return check


def live_counters(base_url: str, keys: Values) -> Values:
    """The counts the API serves right now for every key (G3: Postgres + pending deltas)."""
    targets = sorted({(tt, tid) for _col, tt, tid in keys})

    def fetch(target):
        tt, tid = target
        collection = {"post": "posts", "article": "articles"}.get(tt) or COMMENT_URL[tt]
        resp = http().get(f"{base_url}/api/{collection}/{tid}/counts", timeout=30)
        resp.raise_for_status()
        return target, resp.json()

    out: Values = {}
    with ThreadPoolExecutor(LIVE_THREADS) as pool:
        for (tt, tid), counts in pool.map(fetch, targets):
            for col, value in counts.items():
                if (col, tt, tid) in keys:
                    out[(col, tt, tid)] = value
    return out


def check_live(ledger: Ledger, live: Values, keys: Values) -> Check:
    bad, n = compare(ledger, live, "live")
    check = Check("live API counts (before the last flush) == acknowledged requests", n, bad)
    for key in sorted(set(keys) - set(live)):
        check.mismatches.append(Mismatch("live", str(key), "a count", "missing"))
    return check


def check_served(served: Values, stored: Values) -> Check:
    """After the last flush the API serves what Postgres holds: the read model a page
    reads (engine/readmodel.py) agrees with the table, after chaos too."""
    check = Check("API counts after the last flush (read model) == Postgres", len(stored))
    for key in sorted(stored):
        if served.get(key) != stored[key]:
            check.mismatches.append(Mismatch("served", str(key), stored[key], served.get(key)))
    return check
