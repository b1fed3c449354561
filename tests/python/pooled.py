"""psycopg 3 and asyncpg with many more connections than the proxy's pool has server
connections (tests/clients.rs sets SHARDGATE_URL and a pool of 3 per shard; `accounts` is
sharded by id and holds ids 1..60 with balance id * 10).

Every connection prepares statements (psycopg with prepare_threshold=0, asyncpg always), runs
them in and out of transactions on keys of every shard, and keeps its own setting; each answer is
checked against values computed here. Prints "pooled ok".
"""
import asyncio
import faulthandler
faulthandler.dump_traceback_later(180, exit=True)
import os
import threading

import asyncpg
import psycopg

URL = os.environ["SHARDGATE_URL"]
CLIENTS = 24
ROUNDS = 15


def psycopg_client(i, errors):
    try:
        with psycopg.connect(URL, autocommit=True, prepare_threshold=0) as conn:
            conn.execute(f"set application_name = 'pg{i}'")
            for r in range(ROUNDS):
                key = (i * 7 + r) % 60 + 1
                row = conn.execute("select balance from accounts where id = %s", (key,)).fetchone()
                assert row == (key * 10,), (i, key, row)
                with conn.transaction():
                    row = conn.execute("select id, balance from accounts where id = %s", (key,)).fetchone()
                    assert row == (key, key * 10), row
                    total = conn.execute("select sum(balance) from accounts where id <= %s", (10,)).fetchone()
                    assert total == (550,), total
                assert conn.execute("show application_name").fetchone() == (f"pg{i}",)
            # A statement closed and prepared again under the same name.
            conn.execute("deallocate all")
            assert conn.execute("select balance from accounts where id = %s", (5,)).fetchone() == (50,)
    except Exception as e:  # reported by the main thread
        errors.append(f"psycopg client {i}: {e!r}")


async def asyncpg_client(i):
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute(f"set application_name = 'apg{i}'")
        stmt = await conn.prepare("select balance from accounts where id = $1")
        for r in range(ROUNDS):
            key = (i * 11 + r) % 60 + 1
            assert await stmt.fetchval(key) == key * 10
            async with conn.transaction():
                assert await conn.fetchval("select balance from accounts where id = $1", key) == key * 10
                assert await stmt.fetchval(key) == key * 10
            assert await conn.fetchval("show application_name") == f"apg{i}"
    finally:
        await conn.close()


async def asyncpg_all():
    await asyncio.gather(*(asyncpg_client(i) for i in range(CLIENTS)))


def main():
    errors = []
    threads = [threading.Thread(target=psycopg_client, args=(i, errors)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors)
    asyncio.run(asyncpg_all())
    print("pooled ok")


main()
