"""Habits of psycopg 3 and asyncpg that broke on several shards, through shardgate on three
unlike shards (tests/clients.rs sets SHARDGATE_URL; `items` is sharded by id, `countries` is a
reference table). Expected values are computed here, never read back from the proxy alone.
"""
import asyncio
import faulthandler
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import os

import asyncpg
import psycopg
from psycopg.types.composite import CompositeInfo, register_composite
from psycopg.types.enum import EnumInfo, register_enum

URL = os.environ["SHARDGATE_URL"]


def check_psycopg():
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("create table items (id bigint primary key, name text, qty int)")
        conn.execute("create table countries (code text primary key, name text)")
        cur = conn.cursor()
        # executemany over rows on every shard: one prepared statement per shard connection.
        cur.executemany(
            "insert into items (id, name, qty) values (%s, %s, %s)",
            [(i, f"n{i}", i % 5) for i in range(1, 41)],
        )
        assert conn.execute("select count(*) from items").fetchone() == (40,)
        # A multi-row insert split over shards, every str sent untyped: each shard gets only
        # the parameters its rows use.
        cur.execute(
            "insert into items (id, name, qty) values (%s, %s, %s), (%s, %s, %s), (%s, %s, %s)",
            (101, "a", 1, 102, "b", 2, 103, "c", 3),
        )
        assert cur.rowcount == 3, cur.rowcount
        rows = conn.execute("select id, name from items where id > 100 order by id").fetchall()
        assert rows == [(101, "a"), (102, "b"), (103, "c")], rows
        # Reference RETURNING: one row, one count.
        cur.execute("insert into countries values (%s, %s) returning code", ("ke", "Kenya"))
        assert cur.fetchall() == [("ke",)] and cur.rowcount == 1
        # Describe(portal) of a statement every shard runs matches its rows.
        assert conn.execute("select set_config('application_name', %s, false)", ("py",)).fetchone() == ("py",)
        # Pipeline mode: results flow before the pipeline syncs.
        with conn.pipeline():
            a = conn.execute("select count(*) from items")
            b = conn.execute("select name from items where id = %s", (7,))
            assert a.fetchone() == (43,)
            assert b.fetchone() == ("n7",)
            for i in range(200, 260):
                conn.execute("insert into items (id, name, qty) values (%s, %s, %s)", (i, "p", 0))
        assert conn.execute("select count(*) from items where name = 'p'").fetchone() == (60,)
        # SET TRANSACTION right after BEGIN, as Rails and hand-written apps do.
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read")
            levels = conn.execute("select distinct current_setting('transaction_isolation') from items").fetchall()
            assert levels == [("repeatable read",)], levels
        # A syntax error is PostgreSQL's own.
        try:
            conn.execute("selec 1")
            raise AssertionError("must fail")
        except psycopg.errors.SyntaxError as e:
            assert 'syntax error at or near "selec"' in str(e), e
        # A registered enum: psycopg declares the first shard's OID in Parse and expects it in
        # every description, whichever shard answers.
        conn.execute("create type mood as enum ('sad', 'ok', 'happy')")
        # A composite naming the enum: its binary values carry type OIDs inside them.
        conn.execute("create type pair as (m mood, n int)")
        conn.execute("create table feelings (id bigint primary key, m mood, p pair)")
        info = EnumInfo.fetch(conn, "mood")
        register_enum(info, conn)
        Mood = info.enum
        register_composite(CompositeInfo.fetch(conn, "pair"), conn)
        want = {i: (Mood.ok if i % 2 else Mood.sad) for i in range(1, 13)}
        for i, m in want.items():
            conn.execute(
                "insert into feelings (id, m, p) values (%s, %s, row(%s, %s)::pair)", (i, m, m, i)
            )
        rows = conn.execute("select id, m from feelings order by id").fetchall()
        assert rows == sorted(want.items()), rows
        with conn.cursor(binary=True) as cur:
            cur.execute("select id, p from feelings order by id")
            got = [(i, tuple(p)) for i, p in cur.fetchall()]
            assert got == [(i, (m, i)) for i, m in sorted(want.items())], got
        # libpq's one-shot query (Parse, Bind, Describe of the portal, Execute) in binary: the
        # OID inside each composite is the one the client's catalog gives the enum.
        mood_oid = conn.execute("select 'mood'::regtype::oid").fetchone()[0]
        for i in want:
            res = conn.pgconn.exec_params(
                b"select p from feelings where id = $1", [str(i).encode()], result_format=1
            )
            value = res.get_value(0, 0)
            assert int.from_bytes(value[4:8], "big") == mood_oid, (i, value, mood_oid)
        # An anonymous record's fields are named by the values alone.
        res = conn.pgconn.exec_params(b"select row(m, id) from feelings", [], result_format=1)
        assert res.ntuples == 12, res.ntuples
        for r in range(res.ntuples):
            assert int.from_bytes(res.get_value(r, 0)[4:8], "big") == mood_oid, r
        # The same from a cursor over every shard, fetched in binary.
        with conn.transaction():
            conn.execute("declare every_pair cursor for select p from feelings")
            res = conn.pgconn.exec_params(b"fetch all from every_pair", [], result_format=1)
            assert res.ntuples == 12, res.ntuples
            for r in range(res.ntuples):
                assert int.from_bytes(res.get_value(r, 0)[4:8], "big") == mood_oid, r
        for i, m in want.items():
            assert conn.execute("select m from feelings where id = %s", (i,)).fetchone() == (m,)
        assert conn.execute("select count(*) from feelings where m = %s", (Mood.ok,)).fetchone() == (6,)
        # Notifications reach a connection waiting for them.
        with psycopg.connect(URL, autocommit=True) as listener:
            listener.execute("listen jobs")
            conn.execute("notify jobs, 'ready'")
            got = next(listener.notifies(timeout=30))
            assert got.payload == "ready", got
            listener.execute("notify jobs, 'mine'")
            own = next(listener.notifies(timeout=30))
            assert own.pid == listener.info.backend_pid, (own.pid, listener.info.backend_pid)
    print("psycopg everyday ok")


async def check_asyncpg():
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=2)
    # Releasing a connection resets it (asyncpg sends CLOSE ALL, UNLISTEN *, RESET ALL ...).
    for _ in range(3):
        async with pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from items where id < $1", 41) == 40
    async with pool.acquire() as conn:
        await conn.executemany(
            "insert into items (id, name, qty) values ($1, $2, $3)",
            [(i, "q", 1) for i in range(300, 330)],
        )
        assert await conn.fetchval("select count(*) from items where name = 'q'") == 30
        # The enum made by the psycopg part: asyncpg introspects the OIDs it is described with.
        rows = await conn.fetch("select id, m from feelings order by id")
        assert [(r["id"], r["m"]) for r in rows] == [(i, "ok" if i % 2 else "sad") for i in range(1, 13)], rows
        assert await conn.fetchval("select count(*) from feelings where m = $1", "ok") == 6
        for i in range(1, 13):
            assert await conn.fetchval("select m from feelings where id = $1", i) == ("ok" if i % 2 else "sad")
        # Binary composites from every shard name the types as the catalog asyncpg read does
        # (asyncpg refuses a field OID it was not described with).
        mood = lambda i: "ok" if i % 2 else "sad"
        rows = await conn.fetch("select id, p, array[p] as ps from feelings order by id")
        got = [(r["id"], tuple(r["p"]), [tuple(x) for x in r["ps"]]) for r in rows]
        assert got == [(i, (mood(i), i), [(mood(i), i)]) for i in range(1, 13)], got
        for i in range(1, 13):
            assert tuple(await conn.fetchval("select p from feelings where id = $1", i)) == (mood(i), i)
        # A cursor read in parts: each Execute after the first comes without its Bind.
        async with conn.transaction():
            for i in range(1, 13):
                cur = await conn.cursor(
                    "select p from feelings, generate_series(1, 5) g where id = $1", i
                )
                got = []
                for _ in range(3):
                    got.extend(tuple(r["p"]) for r in await cur.fetch(2))
                assert got == [(mood(i), i)] * 5, (i, got)
        rows = await conn.fetch("update feelings set m = m returning id, p")
        got = sorted((r["id"], tuple(r["p"])) for r in rows)
        assert got == [(i, (mood(i), i)) for i in range(1, 13)], got
        got = asyncio.get_running_loop().create_future()
        await conn.add_listener("events", lambda *args: got.set_result(args[3]))
        other = await asyncpg.connect(URL)
        await other.execute("notify events, 'fired'")
        assert await asyncio.wait_for(got, 30) == "fired"
        await other.close()
        await conn.remove_listener("events", lambda *args: None)
    await pool.close()
    print("asyncpg everyday ok")


check_psycopg()
asyncio.run(check_asyncpg())
