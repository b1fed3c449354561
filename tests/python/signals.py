"""pg_cancel_backend and pg_terminate_backend of the pid each connection was given, with psycopg 3
and asyncpg, in transaction pooling (tests/clients.rs sets SHARDGATE_URL, and OTHER_URL and
ADMIN_URL for another user and an admin user; `accounts` is sharded by id and holds ids 1..60).
The pid is one the proxy minted, which no shard knows: the proxy must signal its own session,
as PostgreSQL signals a backend, and only when PostgreSQL's rule lets the caller. Prints
"signals ok".
"""
import asyncio
import faulthandler
faulthandler.dump_traceback_later(120, exit=True)
import os
import threading
import time

import asyncpg
import psycopg
from psycopg import errors

URL = os.environ["SHARDGATE_URL"]
OTHER_URL = os.environ["OTHER_URL"]
ADMIN_URL = os.environ["ADMIN_URL"]


def connect(url=URL, **kw):
    return psycopg.connect(url, autocommit=True, **kw)


def raises(error, what, run):
    """Runs `run`, which must fail with `error`; returns the exception. `what` names the case."""
    try:
        run()
    except error as e:
        return e
    raise AssertionError(f"{what}: no {error.__name__}")


def expect_broken(conn, what):
    try:
        conn.execute("select 1")
    except psycopg.OperationalError as e:
        assert "terminating connection due to administrator command" in str(e), (what, e)
        assert conn.broken, what
        return
    raise AssertionError(f"{what}: the connection still works")


def terminations():
    killer = connect()
    # Server-side binding: a Bind carries the pid.
    victim = connect()
    pid = victim.info.backend_pid
    assert pid > 1 << 22, pid
    assert killer.execute("select pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    expect_broken(victim, "terminated through a parameter")
    # The pid now names no session: PostgreSQL's answer for a pid that is no backend's.
    notices = []
    killer.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    assert killer.execute("select pg_terminate_backend(%s)", [pid]).fetchone() == (False,)
    assert notices == [("WARNING", f"PID {pid} is not a PostgreSQL backend process")], notices

    # A literal, through the simple protocol, with an alias.
    victim = connect()
    cur = psycopg.ClientCursor(killer)
    cur.execute(f"select pg_terminate_backend({victim.info.backend_pid}) as gone")
    assert cur.description[0].name == "gone", cur.description
    assert cur.fetchone() == (True,)
    expect_broken(victim, "terminated through a literal")

    # A named prepared statement, with the pid in binary.
    victim = connect()
    row = killer.execute(
        "select pg_terminate_backend(%b::int)", [victim.info.backend_pid], prepare=True
    ).fetchone()
    assert row == (True,), row
    expect_broken(victim, "terminated through a prepared statement")

    # A session terminated inside a transaction: what it wrote is rolled back.
    victim = connect()
    victim.execute("begin")
    victim.execute("update accounts set balance = -1 where id in (1, 2, 3)")
    assert killer.execute("select pg_terminate_backend(%s)", [victim.info.backend_pid]).fetchone() == (True,)
    expect_broken(victim, "terminated in a transaction")
    rows = killer.execute("select count(*) from accounts where balance < 0").fetchone()
    assert rows == (0,), rows

    # After an error earlier in a pipeline, PostgreSQL skips the call: nobody is signalled.
    victim = connect()
    try:
        with killer.pipeline():
            killer.execute("select 1 / 0")
            killer.execute("select pg_terminate_backend(%s)", [victim.info.backend_pid])
        raise AssertionError("the pipeline did not fail")
    except errors.DivisionByZero:
        pass
    assert victim.execute("select 3").fetchone() == (3,)
    assert killer.execute("select pg_terminate_backend(%s)", [victim.info.backend_pid]).fetchone() == (True,)
    expect_broken(victim, "terminated after the pipeline")

    # Its own pid ends the session, as PostgreSQL ends its own backend.
    me = connect()
    try:
        me.execute("select pg_terminate_backend(%s)", [me.info.backend_pid])
        raise AssertionError("a session that terminated itself went on")
    except psycopg.OperationalError as e:
        assert "administrator command" in str(e), e
    assert me.broken
    killer.close()


def cancels():
    canceller = connect()
    sleeper = connect()
    outcome = []

    def sleep():
        try:
            sleeper.execute("select pg_sleep(30) from accounts where id = 7")
            outcome.append("not cancelled")
        except errors.QueryCanceled as e:
            outcome.append(e.sqlstate)

    t = threading.Thread(target=sleep)
    t.start()
    # Until the sleep runs, the cancel reaches nothing (PostgreSQL's answer is still true).
    deadline = time.time() + 20
    while t.is_alive() and time.time() < deadline:
        assert canceller.execute(
            "select pg_cancel_backend(%s)", [sleeper.info.backend_pid]
        ).fetchone() == (True,)
        t.join(0.3)
    t.join()
    assert outcome == ["57014"], outcome
    # The cancelled session goes on.
    assert sleeper.execute("select balance from accounts where id = 7").fetchone() == (70,)

    # Its own pid cancels the statement that asks; in a transaction the transaction fails.
    own = [sleeper.info.backend_pid]
    raises(errors.QueryCanceled, "own cancel",
           lambda: sleeper.execute("select pg_cancel_backend(%s)", own))
    with sleeper.transaction():
        sleeper.execute("select balance from accounts where id = 8")
        raises(errors.QueryCanceled, "own cancel in a transaction",
               lambda: sleeper.execute("select pg_cancel_backend(%s)", own))
        raises(errors.InFailedSqlTransaction, "the transaction after its cancelled statement",
               lambda: sleeper.execute("select 1"))
        raise psycopg.Rollback()
    assert sleeper.execute("select 2").fetchone() == (2,)
    canceller.close()
    sleeper.close()


def permissions():
    """Another user may not signal a session; an admin user may, as a superuser in PostgreSQL."""
    victim = connect()
    victim.execute("begin")
    victim.execute("update accounts set balance = balance + 1 where id = 11")
    pid = victim.info.backend_pid
    stranger = connect(OTHER_URL)
    for function, message in [
        ("pg_terminate_backend", "permission denied to terminate process"),
        ("pg_cancel_backend", "permission denied to cancel query"),
    ]:
        e = raises(errors.InsufficientPrivilege, f"another user's {function}",
                   lambda: stranger.execute(f"select {function}(%s)", [pid]))
        assert e.diag.message_primary == message, e
        assert "admin = true" in e.diag.message_hint, e.diag.message_hint
        # Through the simple protocol too, and inside a transaction the refusal aborts it.
        with stranger.transaction():
            cur = psycopg.ClientCursor(stranger)
            raises(errors.InsufficientPrivilege, f"another user's {function} (literal)",
                   lambda: cur.execute(f"select {function}({pid})"))
            raises(errors.InFailedSqlTransaction, "the transaction after the refusal",
                   lambda: stranger.execute("select 1"))
            raise psycopg.Rollback()
    # Refused, the victim is untouched: its transaction goes on and commits.
    victim.execute("update accounts set balance = balance - 1 where id = 11")
    victim.execute("commit")
    assert victim.execute("select balance from accounts where id = 11").fetchone() == (110,)
    admin = connect(ADMIN_URL)
    assert admin.execute("select pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    expect_broken(victim, "terminated by an admin user")
    # The admin's own session is one a plain user may not end either.
    raises(errors.InsufficientPrivilege, "a plain user ending an admin's session",
           lambda: stranger.execute("select pg_terminate_backend(%s)", [admin.info.backend_pid]))
    assert admin.execute("select 1").fetchone() == (1,)
    stranger.close()
    admin.close()


async def closed(conn, what):
    """Waits until asyncpg has seen `conn` closed: how soon depends on the machine's load, so
    a fixed pause would make the test flaky. A pool takes back a connection of its that closes
    (its proxy then refuses every call): that is seeing it closed too."""
    def is_closed():
        try:
            return conn.is_closed()
        except asyncpg.exceptions.InterfaceError as e:
            assert "released back to the pool" in str(e), e
            return True

    deadline = time.time() + 20
    while not is_closed():
        assert time.time() < deadline, what
        await asyncio.sleep(0.05)


async def with_asyncpg():
    killer = await asyncpg.connect(URL)
    victim = await asyncpg.connect(URL)
    try:
        pid = victim.get_server_pid()
        assert await killer.fetchval("select pg_terminate_backend($1)", pid) is True
        # The signal is sent when the answer comes, and the connection closes soon after, as
        # with PostgreSQL: a driver sees it closed once its event loop has read that.
        await closed(victim, "asyncpg: the terminated connection is still open")
        try:
            await victim.fetchval("select 1")
            raise AssertionError("asyncpg: the terminated connection still works")
        except asyncpg.exceptions.InterfaceError:
            pass
        assert await killer.fetchval("select pg_terminate_backend($1)", pid) is False
        # A pool replaces a connection another session terminated. Held while it is
        # terminated, so that the wait for its end can ask it; giving it back after the pool
        # took it back is nothing.
        pool = await asyncpg.create_pool(URL, min_size=2, max_size=2)
        c = await pool.acquire()
        assert await killer.fetchval("select pg_terminate_backend($1)", c.get_server_pid()) is True
        await closed(c, "asyncpg: the terminated pool connection is still open")
        await pool.release(c)
        for _ in range(4):
            async with pool.acquire() as c:
                assert await c.fetchval("select balance from accounts where id = $1", 9) == 90
        await pool.close()
    finally:
        await killer.close()
        victim.terminate()


terminations()
cancels()
permissions()
asyncio.run(with_asyncpg())
print("signals ok")
