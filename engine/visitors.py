"""Who a visitor is, and whether it is a crawler: what a view policy needs to know.

A visitor is, in this order: the signed-in user (``u:<id>``); the first-party ``vid``
cookie (``c:<value>``, 22+ random URL-safe characters the site sets); else a salted
hash of the client address and User-Agent (``h:<hex>``), which is all a client that
keeps no cookies (a script, most crawlers) can be known by. The address is the one the
caller trusts (behind a proxy: what its configured proxy count reports), never a header
taken as is.

Crawlers are recognised by the maintained pattern list of the ``crawler-user-agents``
package; a User-Agent's answer is cached, so a known one costs a dictionary lookup.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets

from crawleruseragents import is_crawler as _listed

from .policy import Visit

VID_COOKIE = "vid"
VID_BYTES = 16  # token_urlsafe(16): 22 characters
VID_MAX_AGE_S = 365 * 24 * 3600
_VID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
CRAWLER_CACHE = 4096  # User-Agents whose classification is kept
USER_AGENT_MAX = 512  # characters of a User-Agent looked at (and hashed)


@functools.lru_cache(maxsize=CRAWLER_CACHE)
def is_crawler(user_agent: str) -> bool:
    """Whether ``user_agent`` is on the crawler list (cached per User-Agent)."""
    return bool(user_agent) and _listed(user_agent)


def new_vid() -> str:
    return secrets.token_urlsafe(VID_BYTES)


def valid_vid(value: str | None) -> bool:
    return bool(value) and bool(_VID.match(value))


def visitor_id(
    user_id: int | None, vid: str | None, address: str, user_agent: str, salt: str
) -> str:
    """The visitor's identity (see the module doc); ``vid`` only if it is well formed."""
    if user_id is not None:
        return f"u:{user_id}"
    if valid_vid(vid):
        return f"c:{vid}"
    message = f"{address}\0{user_agent[:USER_AGENT_MAX]}".encode("utf-8", "surrogatepass")
    return "h:" + hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()[:32]


def visit_of(
    user_agent: str,
    address: str,
    salt: str,
    *,
    vid: str | None = None,
    new_vid: str | None = None,
    user_id: int | None = None,
    author_id: int | None = None,
) -> Visit:
    """The :class:`Visit` of one request: who, a crawler or not, the author or not.
    ``new_vid``: the cookie the answer sets (the request had none), the visitor's
    identity from its next request on."""
    user_agent = user_agent[:USER_AGENT_MAX]
    visitor = visitor_id(user_id, vid, address, user_agent, salt)
    alias = None
    if user_id is None and not valid_vid(vid) and valid_vid(new_vid):
        alias = visitor_id(None, new_vid, address, user_agent, salt)
    return Visit(
        visitor,
        bot=is_crawler(user_agent),
        own=user_id is not None and user_id == author_id,
        alias=alias,
    )
