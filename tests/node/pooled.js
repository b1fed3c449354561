// node-postgres with many more clients than the proxy's pool has server connections
// (tests/clients.rs sets SHARDGATE_URL and a pool of 3 per shard; `accounts` holds ids 1..60 with
// balance id * 10). Each client reuses a named prepared statement across transactions on keys
// of every shard. Prints "node pooled ok".
const assert = require("node:assert/strict");
const { Client } = require("pg");

const URL = process.env.SHARDGATE_URL;

async function one(i) {
  const c = new Client({ connectionString: URL, application_name: `node${i}` });
  await c.connect();
  try {
    for (let r = 0; r < 15; r++) {
      const key = ((i * 13 + r) % 60) + 1;
      const q = { name: "balance_of", text: "select balance from accounts where id = $1", values: [key] };
      assert.equal((await c.query(q)).rows[0].balance, key * 10);
      await c.query("begin");
      assert.equal((await c.query(q)).rows[0].balance, key * 10);
      await c.query("commit");
      assert.equal((await c.query("show application_name")).rows[0].application_name, `node${i}`);
    }
  } finally {
    await c.end();
  }
}

Promise.all(Array.from({ length: 24 }, (_, i) => one(i)))
  .then(() => console.log("node pooled ok"))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
