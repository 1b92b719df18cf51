"""User-Agents the tests, load tests and benchmarks send: under the view policy a client
that announces itself as a script (curl, python-requests, urllib) counts as a crawler."""

from __future__ import annotations


def desktop_user_agent(version: str = "124.0.0.0") -> str:
    """The User-Agent of a desktop Chrome of ``version`` on Linux."""
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{version} Safari/537.36"
    )


BROWSER = desktop_user_agent()
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
