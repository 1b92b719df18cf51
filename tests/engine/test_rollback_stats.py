"""The engine's count of what a rollback dropped, across two Redis incidents.

G5 promises that what a Redis rollback costs is counted in a metric and a log. Totals
kept in the counter Redis would roll back with it: a second restart from a dump taken
before the first incident's drops were recorded would take those counts back, while
the flush log keeps them. The flush counts the drops in the ledger row instead, in the
transaction that drops the batch.
"""

from tests.engine.conftest import seed
from tests.engine.test_rollback import counters_on, hits, restart_older


def test_drops_of_a_rollback_stay_counted_after_a_second_rollback(server, sql):
    c = counters_on(server, sql)
    (i,) = seed(sql, "items", 1)
    c.incr("items.hits", i, 10)
    server.checkpoint()  # the dump holds the pending +10
    c.flush_all()
    dropped = []  # batches the flushes reported dropped (what their log lines say)
    for _ in range(2):  # crash, back from the dump; crash again before the next snapshot
        c = restart_older(server, sql)
        dropped += [s for s in c.flush_all().shards if s.rolled_back]
    assert hits(sql, i) == 10 and len(dropped) == 2
    totals = c.shared_stats()["totals"]
    assert totals["batches_rolled_back"] == 2
    assert totals["deltas_dropped_rollback"] == sum(s.dropped_rollback for s in dropped) == 2
    assert totals["deltas_dropped"] == 0  # no deleted row: the drops are counted apart
