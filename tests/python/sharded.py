"""psycopg 3 and asyncpg with parameters through shardgate on a 3-shard cluster (tests/clients.rs
sets SHARDGATE_URL; `accounts` is sharded by id, `countries` is a reference table).

Each check compares with what the rows must be, computed here, not with the proxy's own view.
"""
import asyncio
import decimal
import faulthandler
import json
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import os
import statistics
import sys

import asyncpg
import psycopg

URL = os.environ["SHARDGATE_URL"]
N = 90


def check_psycopg():
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("create table accounts (id bigint primary key, owner text, balance int)")
        # Single-row inserts by bound key (extended protocol), each on its owner shard.
        for i in range(1, N + 1):
            conn.execute("insert into accounts (id, owner, balance) values (%s, %s, %s)", (i, f"o{i}", i * 7 % 100))
        # Point read by parameter, text and binary.
        assert conn.execute("select owner from accounts where id = %s", (42,)).fetchone() == ("o42",)
        assert conn.execute("select balance from accounts where id = %s", (43,), binary=True).fetchone() == (43 * 7 % 100,)
        # Keys given as float and Decimal: PostgreSQL compares them with the bigint key as
        # numbers (7.0 finds 7), so their bytes must never be read as an integer key.
        for i in (1, 2, 7, 8, 30, 61):
            for value in (float(i), decimal.Decimal(i)):
                for prepare in (False, True):
                    row = conn.execute("select id from accounts where id = %s", (value,), prepare=prepare).fetchall()
                    assert row == [(i,)], (i, value, prepare, row)
        assert conn.execute("select id from accounts where id = %s", (7.5,)).fetchall() == []
        rows = conn.execute("select id from accounts where id = any(%s) order by id", ([2.0, 8.0, 61.0],)).fetchall()
        assert rows == [(2,), (8,), (61,)], rows
        assert conn.execute("update accounts set owner = owner where id = %s", (8.0,)).rowcount == 1
        try:
            conn.execute("insert into accounts (id, owner, balance) values (%s, 'f', 0)", (500.0,))
            raise AssertionError("a float key cannot place a row")
        except psycopg.errors.FeatureNotSupported:
            pass
        assert conn.execute("select count(*) from accounts where id = 500").fetchone() == (0,)
        # A float bound where a count is wanted (LIMIT, HAVING) is never read as an integer:
        # the right rows, or a refusal.
        for sql, args, want in [
            ("select id from accounts order by id limit %s offset %s", (3.0, 1), [(2,), (3,), (4,)]),
            ("select balance %% 2, count(*) from accounts group by 1 having count(*) > %s order by 1", (1.5,),
             [(p, n) for p, n in ((p, sum(1 for i in range(1, N + 1) if i * 7 % 100 % 2 == p)) for p in (0, 1)) if n > 1.5]),
        ]:
            try:
                got = conn.execute(sql, args).fetchall()
                assert got == want, (sql, got, want)
            except psycopg.errors.FeatureNotSupported:
                pass
        # Prepared statement reused across shards.
        for i in (1, 30, 60, 90):
            row = conn.execute("select id from accounts where id = %s", (i,), prepare=True).fetchone()
            assert row == (i,), row
        # Scatter with parameters: ORDER BY + LIMIT, = ANY(array).
        rows = conn.execute("select id, balance from accounts where balance >= %s order by balance desc, id limit 5", (50,)).fetchall()
        expect = sorted((i for i in range(1, N + 1) if i * 7 % 100 >= 50), key=lambda i: (-(i * 7 % 100), i))[:5]
        assert [r[0] for r in rows] == expect, (rows, expect)
        rows = conn.execute("select id from accounts where id = any(%s) order by id", ([3, 33, 63],)).fetchall()
        assert [r[0] for r in rows] == [3, 33, 63], rows
        # avg of an integer column, bound (a Describe of the portal, as psycopg sends): the
        # shards return its sum as bigint, and the client is told numeric, as PostgreSQL does.
        kept = [i * 7 % 100 for i in range(1, N + 1) if i * 7 % 100 >= 50]
        for prepare in (False, True):
            cur = conn.execute("select avg(balance), count(*) from accounts where balance >= %s", (50,), prepare=prepare)
            assert [d.type_code for d in cur.description] == [1700, 20], cur.description
            avg, n = cur.fetchone()
            assert n == len(kept) and abs(avg - decimal.Decimal(sum(kept)) / n) < decimal.Decimal("1e-12"), (avg, n)
            rows = conn.execute("select balance %% 2, avg(balance) from accounts where id > %s group by 1 order by 1", (0,), prepare=prepare).fetchall()
            want = [statistics.mean(b for b in (i * 7 % 100 for i in range(1, N + 1)) if b % 2 == p) for p in (0, 1)]
            assert [r[0] for r in rows] == [0, 1] and all(abs(r[1] - decimal.Decimal(w)) < decimal.Decimal("1e-12") for r, w in zip(rows, want)), rows
        # A named (server-side) cursor under ORDER BY: each fetch merges the shards' cursors.
        want = sorted(((i, i * 7 % 100) for i in range(1, N + 1)), key=lambda r: (-r[1], r[0]))
        with conn.transaction():
            with conn.cursor(name="by_balance") as cur:
                cur.itersize = 7
                cur.execute("select id, balance from accounts where id > %s order by balance desc, id", (0,))
                got = cur.fetchmany(5) + cur.fetchmany(11)
                got += list(cur)
        assert got == want, (got[:8], want[:8])
        # A transaction on one shard commits.
        with conn.transaction():
            conn.execute("update accounts set balance = balance + 1 where id = %s", (5,))
        assert conn.execute("select balance from accounts where id = 5").fetchone() == (36,)
        # A transaction over every shard that fails is rolled back on all of them.
        try:
            with conn.transaction():
                for i in range(1, N + 1):
                    conn.execute("update accounts set balance = 0 where id = %s", (i,))
                conn.execute("select 1 / 0")
            raise AssertionError("division by zero must fail")
        except psycopg.errors.DivisionByZero:
            pass
        assert conn.execute("select balance from accounts where id = 1").fetchone() == (7,), "rolled back"
        assert conn.execute("select count(*) from accounts where balance = 0").fetchone() == (0,)
        # One that succeeds commits on all of them (two-phase commit).
        with conn.transaction():
            for i in range(1, N + 1):
                conn.execute("update accounts set balance = balance + 1000 where id = %s", (i,))
        assert conn.execute("select count(*) from accounts where balance >= 1000").fetchone() == (N,)
        assert conn.execute("update accounts set balance = balance - 1000 where balance >= %s", (1000,)).rowcount == N
        # Changing the shard key is refused.
        try:
            conn.execute("update accounts set id = %s where id = %s", (1000, 2))
            raise AssertionError("moving a row must be refused")
        except psycopg.errors.FeatureNotSupported:
            pass
        # A pipeline parses the unnamed statement again for every query: each query goes where
        # its own statement sends it, whatever else the proxy reads in the same packet (the
        # raw batches of tests/everyday.rs send them in one). In a transaction: in autocommit
        # psycopg syncs after each query.
        conn.execute("create table countries (code text primary key, name text)")
        piped = range(2001, 2031)
        with psycopg.connect(URL) as tx, tx.pipeline():
            for i in piped:
                tx.execute("insert into accounts (id, owner, balance) values (%s, %s, 0)", (i, f"p{i}"))
                tx.execute("select count(*) from countries where code = %s", (str(i),))
        for i in piped:
            assert conn.execute("select owner from accounts where id = %s", (i,)).fetchone() == (f"p{i}",), i
        assert conn.execute("delete from accounts where id > %s", (2000,)).rowcount == len(piped)
    print("psycopg sharded ok")


async def check_asyncpg():
    conn = await asyncpg.connect(URL)
    try:
        stmt = await conn.prepare("select owner, balance from accounts where id = $1")
        for i in (7, 8, 9, 77):
            row = await stmt.fetchrow(i)
            assert (row["owner"], row["balance"]) == (f"o{i}", 36 if i == 5 else i * 7 % 100), row
        rows = await conn.fetch("select id from accounts where id = any($1::bigint[]) order by id desc", [10, 20, 30])
        assert [r["id"] for r in rows] == [30, 20, 10], rows
        rows = await conn.fetch("select id, owner from accounts order by id limit 3 offset 10")
        assert [r["id"] for r in rows] == [11, 12, 13], rows
        await conn.execute("update accounts set owner = $2 where id = $1", 50, "asyncpg")
        assert await conn.fetchval("select owner from accounts where id = $1", 50) == "asyncpg"
        # Aggregates combined across shards, binary results (asyncpg asks for binary).
        assert await conn.fetchval("select count(*) from accounts") == N
        total = await conn.fetchval("select sum(balance) from accounts")
        assert total == sum(i * 7 % 100 for i in range(1, N + 1)) + 1, total
        owners = {r["owner"] for r in await conn.fetch("select owner from accounts")}
        distinct = await conn.fetchval("select count(distinct owner) from accounts")
        assert distinct == len(owners), (distinct, len(owners))
        # Concatenated and variance aggregates in binary: the arrays' lengths add up, jsonb
        # keeps its version byte, the numeric variance is the one of every row.
        ids, names, spread = await conn.fetchrow("select array_agg(id), jsonb_agg(owner), var_pop(id) from accounts")
        every = [r["id"] for r in await conn.fetch("select id from accounts")]
        assert sorted(ids) == sorted(every), ids
        assert sorted(json.loads(names)) == sorted(r["owner"] for r in await conn.fetch("select owner from accounts"))
        assert abs(float(spread) - statistics.pvariance(every)) < 1e-9, spread
        # A DISTINCT sum: every shard's values gathered, then summed once (a binary bigint).
        balances = {r["balance"] for r in await conn.fetch("select balance from accounts")}
        assert await conn.fetchval("select sum(distinct balance) from accounts") == sum(balances)
        try:
            await conn.fetch("select bit_xor(id::bit(8)) from accounts")
            raise AssertionError("bit_xor of bit strings across shards is refused")
        except asyncpg.exceptions.FeatureNotSupportedError:
            pass
    finally:
        await conn.close()
    print("asyncpg sharded ok")


if __name__ == "__main__":
    check_psycopg()
    asyncio.run(check_asyncpg())
    sys.exit(0)
