// node-postgres through shardgate on three shards (tests/clients.rs sets SHARDGATE_URL;
// `accounts` is sharded by id). Each check compares with values computed here.
// Prints "node-postgres ok".
const assert = require("node:assert/strict");
const { Client, Pool } = require("pg");

const URL = process.env.SHARDGATE_URL;
const N = 60;

async function main() {
  const c = new Client({ connectionString: URL });
  await c.connect();
  await c.query("create table accounts (id bigserial primary key, owner text, balance int)");
  // Parameterized inserts, keys from the cluster's sequence, given back by RETURNING.
  const ids = [];
  for (let i = 0; i < N; i++) {
    const r = await c.query(
      "insert into accounts (owner, balance) values ($1, $2) returning id",
      [`o${i}`, 100]);
    ids.push(Number(r.rows[0].id));
  }
  assert.equal(new Set(ids).size, N);
  // A named prepared statement reused for keys on different shards.
  for (const [i, id] of ids.entries()) {
    const r = await c.query({ name: "owner_of", text: "select owner from accounts where id = $1", values: [id] });
    assert.deepEqual(r.rows, [{ owner: `o${i}` }]);
  }
  // Bound array, bound LIMIT/OFFSET, an aggregate over every shard.
  const some = ids.slice(0, 5);
  const r1 = await c.query("select id from accounts where id = any($1) order by id", [some]);
  assert.deepEqual(r1.rows.map((r) => Number(r.id)), [...some].sort((a, b) => a - b));
  const r2 = await c.query("select owner from accounts order by id limit $1 offset $2", [3, 2]);
  assert.deepEqual(r2.rows.map((r) => r.owner), ["o2", "o3", "o4"]);
  const r3 = await c.query("select sum(balance) as total, count(*) as n from accounts");
  assert.deepEqual([Number(r3.rows[0].total), Number(r3.rows[0].n)], [100 * N, N]);
  // A transfer across shards commits atomically; a failed one rolls back everywhere.
  await c.query("begin");
  await c.query("update accounts set balance = balance - 10 where id = $1", [ids[0]]);
  await c.query("update accounts set balance = balance + 10 where id = $1", [ids[N - 1]]);
  await c.query("commit");
  await c.query("begin");
  await c.query("update accounts set balance = 0 where id = $1", [ids[1]]);
  await assert.rejects(c.query("select 1 / 0"), (e) => e.code === "22012");
  await c.query("rollback");
  const r4 = await c.query("select sum(balance) as total from accounts");
  assert.equal(Number(r4.rows[0].total), 100 * N);
  // A bound write whose subquery (an aggregate over every shard) the proxy answers first,
  // described and run in one batch: only the account above the mean is raised.
  const r5 = await c.query(
    "update accounts set balance = balance + $1 where balance > (select avg(balance) from accounts) returning id, balance",
    [5]);
  assert.deepEqual(r5.rows.map((r) => [Number(r.id), r.balance]), [[ids[N - 1], 115]]);
  await c.query("update accounts set balance = balance - $1 where id = $2", [5, ids[N - 1]]);
  // A duplicate key answers with PostgreSQL's code.
  await assert.rejects(
    c.query("insert into accounts (id, owner, balance) values ($1, 'dup', 0)", [ids[2]]),
    (e) => e.code === "23505");
  await c.end();
  // A pool of clients, more queries than connections.
  const pool = new Pool({ connectionString: URL, max: 3 });
  const counts = await Promise.all(ids.slice(0, 12).map((id) =>
    pool.query("select count(*) as n from accounts where id = $1", [id])));
  assert.ok(counts.every((r) => Number(r.rows[0].n) === 1));
  await pool.end();
  console.log("node-postgres ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
