"""engine/keys.py is the one definition of key and field names: the Lua scripts spell the
bookkeeping fields the same way, and the SQL shard rule agrees with Python's."""

import re
from importlib import resources

import pytest
import sqlalchemy as sa

from engine.keys import (
    BASE_FIELD,
    BUCKET_SEP,
    DRAINING,
    META_FIELDS,
    OLDEST_FIELD,
    RM_COLUMN,
    RM_FENCED,
    RM_FILLED,
    RM_HITS,
    RM_LIFE,
    RM_RELEASED,
    RM_ROW_LIFE,
    RM_VERSION,
    Keys,
)

SCRIPTS = (
    "incr.lua",
    "claim.lua",
    "assign.lua",
    "read.lua",
    "mark.lua",
    "count_buckets.lua",
    "release.lua",
    "rm_read.lua",
    "rm_fill.lua",
    "rm_forget.lua",
    "spool.lua",
)
MIRRORS = {
    "RM_LIFE": RM_LIFE,
    "RM_VERSION": RM_VERSION,
    "RM_RELEASED": RM_RELEASED,
    "RM_ROW_LIFE": RM_ROW_LIFE,
    "RM_COLUMN": RM_COLUMN,
    "RM_HITS": RM_HITS,
    "RM_FILLED": RM_FILLED,
    "RM_FENCED": RM_FENCED,
    "OLDEST": OLDEST_FIELD,
    "BASE": BASE_FIELD,
    "DRAINING": DRAINING,
    "BUCKET_SEP": BUCKET_SEP,
    "SEP": BUCKET_SEP,
}


def lua_constants(name: str) -> dict[str, str]:
    text = resources.files("engine").joinpath("lua", name).read_text()
    found = {}
    for names, values in re.findall(r"^local ([A-Z_, ]+) = ('[^\n]*)", text, re.MULTILINE):
        for n, v in zip(names.split(","), re.findall(r"'([^']*)'", values), strict=True):
            found[n.strip()] = v
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_lua_field_constants_mirror_keys_py(script):
    found = lua_constants(script)
    assert found, f"{script} names no field constant"
    assert {n: MIRRORS[n] for n in found} == found


def test_bookkeeping_fields_cannot_be_taken_for_deltas():
    # batch.split counts them by their leading "_": delta fields are "<id>:<code>"
    assert all(f.startswith("_") for f in META_FIELDS)


def test_sql_shard_rule_is_the_python_one(sql):
    keys = Keys(shards=7)
    ids = [1, 6, 7, 8, 2**31, 2**62 + 5, 2**63 - 1]
    with sql.connect() as conn:
        got = conn.execute(
            sa.text(f"SELECT {keys.shard_sql('u.id')} FROM unnest(CAST(:ids AS bigint[])) u(id)"),
            {"ids": "{" + ",".join(map(str, ids)) + "}"},
        ).scalars()
        assert list(got) == [keys.shard_of(i) for i in ids]
