"""psycopg 3 and asyncpg over TLS to shardgate: verify-full against the test CA, and a
plaintext login refused when the proxy requires TLS."""
import asyncio
import os
import ssl

import asyncpg
import psycopg

url = os.environ["SHARDGATE_URL"]
ca = os.environ["SHARDGATE_CA"]

with psycopg.connect(f"{url}?sslmode=verify-full&sslrootcert={ca}") as conn:
    assert conn.pgconn.ssl_in_use
    total = conn.execute("select sum(balance) from accounts").fetchone()[0]
    print("psycopg tls", total)

try:
    psycopg.connect(f"{url}?sslmode=disable")
    raise SystemExit("a plaintext login was accepted")
except psycopg.OperationalError as e:
    assert "SSL connection is required" in str(e), e
    print("psycopg plaintext refused")


async def main():
    ctx = ssl.create_default_context(cafile=ca)
    conn = await asyncpg.connect(url, ssl=ctx)
    rows = await conn.fetch("select id from accounts where id = any($1::bigint[]) order by id", [1, 2, 3])
    print("asyncpg tls", [r["id"] for r in rows])
    await conn.close()


asyncio.run(main())
