"""Postgres array literals: one text parameter per array keeps 100k-element batches cheap
to send and to parse (psycopg2 would otherwise render ``ARRAY[...]`` element by element)."""

from __future__ import annotations

from collections.abc import Iterable


def int_array(values: Iterable[int]) -> str:
    """``'{1,2,3}'``, to be bound as ``CAST(:p AS bigint[])``."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"
