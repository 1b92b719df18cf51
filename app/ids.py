"""Row ids in URLs and bodies: positive Postgres bigints, nothing else."""

from __future__ import annotations

from werkzeug.routing import BaseConverter

MAX_ID = 2**63 - 1


def at_most(bound: int) -> str:
    """A regex of the decimal strings 1..``bound``, without leading zeros.

    The URL converter must refuse out-of-range ids by its regex: werkzeug records a
    method mismatch before it runs a converter, so a refusal from ``to_python`` would
    turn ``DELETE /api/posts/0`` into a 405 instead of a 404.
    """
    digits = str(bound)
    n = len(digits)
    alternatives = [f"[1-9][0-9]{{0,{n - 2}}}"] if n > 1 else []
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:
            rest = f"[0-9]{{{n - i - 1}}}" if i < n - 1 else ""
            alternatives.append(f"{digits[:i]}[{low}-{int(d) - 1}]{rest}")
    alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


class IdConverter(BaseConverter):
    """``<id:name>``: 1..2**63-1 as plain digits; anything else does not match (404)."""

    regex = at_most(MAX_ID)

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))


def valid_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID
