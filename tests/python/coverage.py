"""COPY, server-side cursors, SQL PREPARE and pool habits of psycopg 3 and asyncpg through shardgate on
three shards (tests/clients.rs sets SHARDGATE_URL; `events` and `events2` are sharded by id).

Each check compares with rows computed here, not with the proxy's own view.
"""
import asyncio
import datetime
import decimal
import faulthandler
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import io
import os

import asyncpg
import psycopg

URL = os.environ["SHARDGATE_URL"]
N = 300


def check_psycopg():
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("create table events (id bigint primary key, kind text, n int)")
        conn.execute("create table events2 (id bigint primary key, kind text, n int)")
        cur = conn.cursor()
        # COPY FROM STDIN in text, rows written one by one, split by key.
        with cur.copy("copy events (id, kind, n) from stdin") as cp:
            for i in range(1, N + 1):
                cp.write_row((i, f"k{i % 5}\tx", i))
        assert conn.execute("select count(*) from events").fetchone() == (N,)
        assert conn.execute("select kind from events where id = 7").fetchone() == ("k2\tx",)
        # COPY TO STDOUT, parsed back by psycopg.
        with cur.copy("copy events (id, n) to stdout") as cp:
            cp.set_types(["int8", "int4"])
            seen = sorted(cp.rows())
        assert seen == [(i, i) for i in range(1, N + 1)], seen[:5]
        # Binary COPY both ways.
        with cur.copy("copy events2 from stdin (format binary)") as cp:
            cp.set_types(["int8", "text", "int4"])
            for i in range(1, 101):
                cp.write_row((i, "b", -i))
        assert conn.execute("select sum(n) from events2").fetchone() == (-5050,)
        # A named (server-side) cursor over every shard, with a bound parameter.
        with conn.transaction():
            with conn.cursor(name="walk") as sc:
                sc.itersize = 37
                sc.execute("select id, kind from events where n > %s", (100,))
                ids = [r[0] for r in sc]
        assert sorted(ids) == list(range(101, N + 1)), len(ids)
        # A named cursor on one shard by key.
        with conn.transaction():
            with conn.cursor(name="one") as sc:
                sc.execute("select n from events where id = %s", (42,))
                assert sc.fetchall() == [(42,)]
        # SQL-level PREPARE / EXECUTE.
        conn.execute("prepare get_n (bigint) as select n from events where id = $1")
        for i in (1, 150, 300):
            assert conn.execute(f"execute get_n({i})").fetchone() == (i,)
        conn.execute("deallocate get_n")
    print("psycopg coverage ok")


async def check_asyncpg():
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=2)
    # Every release runs asyncpg's reset (it includes CLOSE ALL and UNLISTEN *).
    for i in range(1, 11):
        async with pool.acquire() as conn:
            assert await conn.fetchval("select n from events where id = $1", i) == i
    async with pool.acquire() as conn:
        # copy_records_to_table: binary COPY FROM STDIN.
        await conn.execute("delete from events2")
        res = await conn.copy_records_to_table(
            "events2", records=[(i, "r", i * 2) for i in range(1, 201)], columns=["id", "kind", "n"]
        )
        assert res == "COPY 200", res
        assert await conn.fetchval("select sum(n) from events2") == sum(i * 2 for i in range(1, 201))
        # copy_from_table: COPY TO STDOUT.
        buf = io.BytesIO()
        await conn.copy_from_table("events2", columns=["id"], output=buf)
        assert sorted(int(x) for x in buf.getvalue().split()) == list(range(1, 201))
        # A protocol-level cursor (portal with a row limit) over every shard.
        async with conn.transaction():
            got = [r["id"] async for r in conn.cursor("select id from events2 where n > $1", 100, prefetch=30)]
        assert sorted(got) == list(range(51, 201)), len(got)
        # Cursor.forward() is a MOVE of the protocol portal: run where the portal is bound;
        # one the proxy merges from several shards is refused, never answered wrongly.
        async with conn.transaction():
            cur = await conn.cursor("select n from events2 where id = $1", 8)
            assert [r["n"] for r in await cur.fetch(1)] == [16]
            assert await cur.forward(5) == 0
        async with conn.transaction():
            cur = await conn.cursor("select n from events2 where id = $1", 7)
            assert await cur.forward(1) == 1
            assert await cur.fetch(1) == []
        try:
            async with conn.transaction():
                cur = await conn.cursor("select n from events2 order by n")
                await cur.forward(3)
            raise AssertionError("MOVE of a merged portal answered")
        except asyncpg.exceptions.FeatureNotSupportedError:
            pass
    async with pool.acquire() as conn:
        # HAVING with values asyncpg binds in binary after the server described them: a
        # numeric, a date and a timestamptz, each compared with groups merged across shards.
        await conn.execute("alter table events2 add column amount numeric, add column day date, "
                           "add column at timestamptz")
        await conn.execute("update events2 set amount = id / 7.0, day = date '2024-01-01' + id::int, "
                           "at = timestamptz '2024-01-01 00:00+00' + id * interval '1 hour'")
        grouped = "select id % 4 as g from events2 group by g having {} order by g"
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        for having, value, want in [
            # The groups' largest ids are 200, 197, 198 and 199.
            ("max(amount) > $1", decimal.Decimal("28.2"), [0, 2, 3]),
            ("max(day) >= $1", datetime.date(2024, 1, 1) + datetime.timedelta(days=199), [0, 3]),
            ("max(at) < $1", start + datetime.timedelta(hours=199), [1, 2]),
            # Conditions PostgreSQL evaluates over the merged groups: an interval bound in
            # binary, OR, BETWEEN.
            ("max(at) - timestamptz '2024-01-01 00:00+00' > $1 or max(id) = 197",
             datetime.timedelta(hours=198, minutes=30), [0, 1, 3]),
            ("max(amount) between $1 and 28.3", decimal.Decimal("28.2"), [2]),
        ]:
            got = [r["g"] for r in await conn.fetch(grouped.format(having), value)]
            assert got == want, (having, got)
    await pool.close()
    # asyncpg prepares with Parse, Describe and Flush, then binds in a batch of its own: the
    # Parse's implicit transaction on the shard ends before a statement read in two parts
    # opens its REPEATABLE READ transaction there (it failed with 25001, "SET TRANSACTION
    # ISOLATION LEVEL must be called before any query", after these two statements).
    conn = await asyncpg.connect(URL)
    await conn.fetch("select n, array_agg(id order by id) from events2 where id < 10 group by n order by n")
    await conn.fetch("select kind, rank() over (order by sum(n) desc) from events2 group by kind order by kind")
    got = await conn.fetch(
        "select * from (select kind, count(*) as c from events2 group by kind) s where c > $1 order by kind", 5)
    assert [tuple(r) for r in got] == [("r", 200)], got
    await conn.close()
    print("asyncpg coverage ok")


check_psycopg()
asyncio.run(check_asyncpg())
