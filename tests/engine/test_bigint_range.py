"""Ids outside Postgres bigint: never written (a delta for one would fail its whole
batch at the flush), and missing wherever they are read."""

import pytest

from engine import Outcome
from tests.engine.conftest import seed

BEYOND = [2**63, 2**64 + 5, -(2**63) - 1]


@pytest.mark.parametrize("row_id", BEYOND)
def test_an_id_beyond_bigint_is_missing_everywhere_and_writes_nothing(counters, sql, r, row_id):
    (item,) = seed(sql, "items", 1)
    counters.ensure_index(["items"])
    assert counters.incr_checked([("items.hits", row_id, 1), ("items.hits", item, 1)]) == [
        Outcome.MISSING,
        Outcome.COUNTED,
    ]
    # read with an existing row before the snapshot: that read fills its read model
    assert counters.read("items", [row_id, item]) == {item: {"hits": 1, "likes": 0}}
    before = {k: r.dump(k) for k in r.scan_iter()}
    assert counters.view("items.hits", row_id) is False
    assert counters.incr("items.hits", row_id, check_exists=True) is Outcome.MISSING
    assert counters.read("items", [row_id]) == {}
    assert counters.read_rows("items", [row_id], ("id",)) == {}
    assert counters.view_and_read("items.hits", row_id) is None
    assert counters.exists("items", row_id) is False
    assert {k: r.dump(k) for k in r.scan_iter()} == before  # nothing written
    with pytest.raises(ValueError):
        counters.incr("items.hits", row_id)
    with pytest.raises(ValueError):
        counters.incr_many([("items.hits", item, 1), ("items.hits", row_id, 1)])
    summary = counters.flush_all()
    assert summary.errors == [] and summary.counters == 1
