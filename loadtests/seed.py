"""Seed the content the load runs on, through the public API (so the existence index
and the comment counters see it exactly as they see real traffic).

Writes ``seed.json`` (the ids the Locust users pick from) and logs every comment it
creates in the event log, since each one bumps a ``comments_count``.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .accounting import EventLog
from .stack import http

SEED_THREADS = 8
TIMEOUT_S = 30.0


@dataclass
class Seed:
    posts: list[int] = field(default_factory=list)
    articles: list[int] = field(default_factory=list)
    post_comments: list[int] = field(default_factory=list)
    comments: list[int] = field(default_factory=list)
    authors: list[int] = field(default_factory=list)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


class Seeder:
    def __init__(self, base_url: str, log: EventLog) -> None:
        self.base_url = base_url
        self.log = log

    def _post(self, path: str, body: dict, token: str | None = None, status: int = 201) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = http().post(self.base_url + path, json=body, headers=headers, timeout=TIMEOUT_S)
        if resp.status_code != status:
            raise RuntimeError(f"seeding: POST {path} -> {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def _author(self, _i: int) -> tuple[int, str]:
        body = self._post("/api/users", {"username": f"author_{uuid.uuid4().hex[:12]}"})
        return body["id"], body["token"]

    def _content(self, args) -> int:
        i, collection, (_uid, token) = args
        body = {"title": f"{collection[:-1]} {i}", "content": f"Load test {collection} #{i}."}
        return self._post(f"/api/{collection}", body, token)["id"]

    def _comment(self, args) -> int:
        target_type, collection, target_id, (uid, token) = args
        # Logged before it is sent: an answer lost here is an "unknown", as for the load.
        n = self.log.sent("comment", target_type, target_id, uid)
        resp = http().post(
            f"{self.base_url}/api/{collection}/{target_id}/comments",
            json={"content": f"seed comment on {target_type} {target_id}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )
        self.log.answered(n, resp.status_code)
        if resp.status_code != 201:
            raise RuntimeError(f"seeding a comment -> {resp.status_code}: {resp.text[:300]}")
        return resp.json()["id"]

    def seed(
        self,
        posts: int,
        articles: int,
        commented_share: float = 0.3,
        comments_each: int = 3,
        authors: int = 8,
    ) -> Seed:
        seed = Seed()
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            people = list(pool.map(self._author, range(authors)))
            seed.authors = [uid for uid, _ in people]
            for collection, n, ids in (
                ("posts", posts, seed.posts),
                ("articles", articles, seed.articles),
            ):
                work = [(i, collection, people[i % authors]) for i in range(n)]
                ids.extend(pool.map(self._content, work))
            for tt, collection, targets, out in (
                ("post", "posts", seed.posts, seed.post_comments),
                ("article", "articles", seed.articles, seed.comments),
            ):
                chosen = targets[: max(1, int(len(targets) * commented_share))]
                work = [
                    (tt, collection, tid, people[(tid + k) % authors])
                    for tid in chosen
                    for k in range(comments_each)
                ]
                out.extend(pool.map(self._comment, work))
        return seed
