"""psycopg 3 and asyncpg through shardgate: run by tests/clients.rs with SHARDGATE_URL set.

Exits non-zero (with the assertion that failed) if a driver sees anything other than what it
would see talking to PostgreSQL directly.
"""
import asyncio
import faulthandler
import os
import sys

import asyncpg
import psycopg

URL = os.environ["SHARDGATE_URL"]
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)


def check_psycopg():
    with psycopg.connect(URL) as conn:
        conn.execute("drop table if exists py_items")
        conn.execute("create table py_items(id int primary key, name text, price numeric)")
        with conn.cursor() as cur:
            # Server-side parameters (extended protocol), executemany pipelines them.
            cur.executemany("insert into py_items values (%s, %s, %s)", [(i, f"item {i}", i * 1.5) for i in range(100)])
            cur.execute("select count(*), sum(price) from py_items where id >= %s", (50,))
            assert cur.fetchone() == (50, psycopg.types.numeric.Decimal("5587.5")), "aggregate"
            # Binary results.
            cur.execute("select id, name from py_items where id = %s", (7,), binary=True)
            assert cur.fetchone() == (7, "item 7"), "binary row"
            # Prepared statement, explicitly.
            for i in range(3):
                cur.execute("select name from py_items where id = %s", (i,), prepare=True)
                assert cur.fetchone() == (f"item {i}",), "prepared"
            # COPY both ways.
            with cur.copy("copy py_items (id, name, price) from stdin") as copy:
                for i in range(100, 200):
                    copy.write_row((i, f"item {i}", i))
            cur.execute("select count(*) from py_items")
            assert cur.fetchone() == (200,), "copy in"
            rows = []
            with cur.copy("copy (select id from py_items order by id limit 3) to stdout") as copy:
                for row in copy.rows():
                    rows.append(row)
            assert rows == [("0",), ("1",), ("2",)], rows
        conn.commit()
        # Errors carry SQLSTATE and leave the connection usable after rollback.
        try:
            conn.execute("insert into py_items values (1, 'dup', 0)")
            raise AssertionError("duplicate key must fail")
        except psycopg.errors.UniqueViolation as e:
            assert e.sqlstate == "23505"
        conn.rollback()
        with conn.transaction():
            conn.execute("update py_items set price = 0 where id = 1")
        assert conn.execute("select price from py_items where id = 1").fetchone()[0] == 0
    # Pipeline mode.
    with psycopg.connect(URL) as conn:
        with conn.pipeline():
            curs = [conn.execute("select %s::int * 2", (i,)) for i in range(20)]
        assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(20)], "pipeline"
    print("psycopg ok")


async def check_asyncpg():
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("drop table if exists apg")
        await conn.execute("create table apg(id bigint primary key, tags text[], at timestamptz default now())")
        await conn.executemany("insert into apg(id, tags) values ($1, $2)", [(i, [f"t{i}", "x"]) for i in range(50)])
        row = await conn.fetchrow("select count(*) as n, max(id) as m from apg where $1 = any(tags)", "x")
        assert (row["n"], row["m"]) == (50, 49), row
        stmt = await conn.prepare("select tags from apg where id = $1")
        assert await stmt.fetchval(3) == ["t3", "x"]
        # Cursor (portal with row limits) inside a transaction.
        async with conn.transaction():
            seen = [r["id"] async for r in conn.cursor("select id from apg order by id", prefetch=7)]
        assert seen == list(range(50)), seen
        # copy_records_to_table uses binary COPY.
        await conn.copy_records_to_table("apg", records=[(100 + i, ["c"], None) for i in range(10)], columns=["id", "tags", "at"])
        assert await conn.fetchval("select count(*) from apg") == 60
        try:
            await conn.execute("select 1/0")
            raise AssertionError("division by zero must fail")
        except asyncpg.exceptions.DivisionByZeroError as e:
            assert e.sqlstate == "22012"
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    print("asyncpg ok")


if __name__ == "__main__":
    check_psycopg()
    asyncio.run(check_asyncpg())
    sys.exit(0)
