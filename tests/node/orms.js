// ORMs on node-postgres, one step per line ("name: answer"): Sequelize (sync, bulkCreate,
// includes with findAndCountAll, aggregates, group with an ORDER BY naming the column through
// the model, upsert, managed transactions) and Knex (paginated counts, GROUP BY with HAVING,
// joins on the shard key, a left join counting distinct rows, whereIn over a subquery, a CTE,
// onConflict().merge(), union, a window over groups) and TypeORM (relations loaded with
// skip/take, which it pages through a SELECT DISTINCT over a derived table ordered by an
// output column's bare name, getManyAndCount over a join, query builder subqueries, upsert,
// transactions) and Drizzle (relational queries, which load each relation through a LEFT JOIN
// LATERAL tied to its parent by the key, inserts, a grouped join, a transaction).
// tests/clients.rs runs it through the proxy and against one PostgreSQL
// database and compares the outputs.
//   SHARDGATE_URL=postgres://... node orms.js
const { Sequelize, DataTypes, Op } = require('sequelize');
require('reflect-metadata');
const { DataSource, EntitySchema, In, MoreThan } = require('typeorm');
const url = process.env.SHARDGATE_URL;
const out = [];
// The ORM whose steps run, named in each line.
let orm = '';
async function step(name, f) {
  name = orm + ' ' + name;
  try {
    out.push(name + ': ' + JSON.stringify(await f()));
  } catch (e) {
    const cause = e.parent || e;
    out.push(name + ': ERROR ' + (cause.code || '') + ' ' + cause.message.split('\n')[0]);
  }
}

async function sequelize() {
  orm = 'sequelize';
  const s = new Sequelize(url, { logging: false });
  const Customer = s.define('Customer', { id: { type: DataTypes.BIGINT, primaryKey: true }, name: DataTypes.STRING, tier: DataTypes.INTEGER }, { tableName: 'seq_customers' });
  const Order = s.define('Order', { id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true }, customer_id: { type: DataTypes.BIGINT, primaryKey: true }, total: DataTypes.DECIMAL(10, 2), status: DataTypes.ENUM('new', 'paid', 'void') }, { tableName: 'seq_orders' });
  Customer.hasMany(Order, { foreignKey: 'customer_id' });
  Order.belongsTo(Customer, { foreignKey: 'customer_id' });

  await step('sync', async () => { await s.sync({ force: true }); return 'ok'; });
  await step('bulkCreate', async () => (await Customer.bulkCreate(Array.from({ length: 30 }, (_, i) => ({ id: i + 1, name: 'c' + (i + 1), tier: i % 3 })))).length);
  await step('create orders', async () => { let n = 0; for (let i = 1; i <= 30; i++) for (let k = 0; k < (i % 4); k++) { await Order.create({ customer_id: i, total: (i * 3 + k) / 2, status: ['new', 'paid', 'void'][k % 3] }); n++; } return n; });
  await step('findByPk', async () => (await Customer.findByPk(7)).name);
  await step('findAll where order', async () => (await Customer.findAll({ where: { tier: 1 }, order: [['id', 'DESC']], limit: 3 })).map(c => c.id));
  await step('findAndCountAll', async () => { const r = await Customer.findAndCountAll({ where: { tier: { [Op.gte]: 1 } }, limit: 4, offset: 2, order: [['id', 'ASC']] }); return [r.count, r.rows.map(c => c.id)]; });
  await step('include', async () => (await Customer.findAll({ where: { id: [3, 6, 7] }, include: Order, order: [['id', 'ASC'], [Order, 'id', 'ASC']] })).map(c => [c.id, c.Orders.length]));
  await step('include required count', async () => { const r = await Customer.findAndCountAll({ include: [{ model: Order, required: true, where: { status: 'paid' } }], distinct: true, limit: 3, order: [['id', 'ASC']] }); return [r.count, r.rows.map(c => c.id)]; });
  await step('belongsTo include', async () => (await Order.findAll({ where: { customer_id: 5 }, include: Customer, order: [['id', 'ASC']] })).map(o => o.Customer.name));
  await step('aggregate', async () => [await Order.count(), await Order.sum('total'), await Order.max('total'), await Customer.count({ where: { tier: 2 } })]);
  await step('group', async () => (await Order.findAll({ attributes: ['status', [s.fn('count', s.col('id')), 'n'], [s.fn('sum', s.col('total')), 't']], group: ['status'], order: [['status', 'ASC']], raw: true })));
  await step('update', async () => (await Customer.update({ tier: 9 }, { where: { id: [1, 2, 3] } }))[0]);
  await step('upsert', async () => { await Customer.upsert({ id: 4, name: 'four', tier: 4 }); return (await Customer.findByPk(4)).name; });
  await step('transaction', async () => s.transaction(async (t) => { await Customer.increment('tier', { by: 1, where: { id: 10 }, transaction: t }); await Customer.increment('tier', { by: -1, where: { id: 11 }, transaction: t }); return (await Customer.sum('tier', { transaction: t })); }));
  await step('rollback', async () => { try { await s.transaction(async (t) => { await Customer.update({ name: 'x' }, { where: { id: 12 }, transaction: t }); throw new Error('boom'); }); } catch (e) {} return (await Customer.findByPk(12)).name; });
  await step('destroy', async () => await Order.destroy({ where: { status: 'void' } }));
  await step('raw', async () => (await s.query('select count(*)::int n from seq_orders', { type: Sequelize.QueryTypes.SELECT })));
  await step('final', async () => [await Customer.count(), await Order.count(), await Customer.sum('tier')]);
  // Model.drop() fails inside Sequelize 6 for a model with an ENUM, on one PostgreSQL too.
  await step('drop', async () => { await s.query('drop table seq_orders; drop table seq_customers; drop type "enum_seq_orders_status"'); return 'ok'; });
  await s.close();
}

async function knexSteps() {
  orm = 'knex';
  const knex = require('knex')({ client: 'pg', connection: url, pool: { min: 1, max: 2 } });

  await step('schema', async () => {
    await knex.schema.createTable('kx_users', t => { t.bigInteger('id').primary(); t.string('email'); t.integer('plan'); t.timestamp('joined').defaultTo(knex.fn.now()); });
    await knex.schema.createTable('kx_events', t => { t.bigIncrements('id'); t.bigInteger('user_id').notNullable(); t.string('kind'); t.decimal('amount', 10, 2); t.primary(['id', 'user_id']); });
    return 'ok';
  });
  await step('insert users', async () => (await knex('kx_users').insert(Array.from({ length: 40 }, (_, i) => ({ id: i + 1, email: `u${i + 1}@x.io`, plan: i % 3 }))).returning('id')).length);
  await step('insert events', async () => { const rows = []; for (let u = 1; u <= 40; u++) for (let k = 0; k < u % 5; k++) rows.push({ user_id: u, kind: ['view', 'buy', 'refund'][k % 3], amount: (u * 7 + k) % 50 }); return (await knex('kx_events').insert(rows).returning(['id', 'user_id'])).length; });
  await step('where in + order', async () => (await knex('kx_users').whereIn('id', [3, 9, 27]).orderBy('kx_users.id', 'desc')).map(r => r.email));
  await step('paginate', async () => { const [{ count }] = await knex('kx_users').where('plan', 1).count('* as count'); const page = await knex('kx_users').where('plan', 1).orderBy('id').limit(5).offset(5).pluck('id'); return [count, page]; });
  await step('group having', async () => knex('kx_events').select('kind').count('id as n').sum('amount as total').groupBy('kind').havingRaw('count(id) > ?', [5]).orderBy('kx_events.kind'));
  await step('join on key', async () => knex('kx_users as u').join('kx_events as e', 'e.user_id', 'u.id').where('u.plan', 2).select('u.id').sum('e.amount as s').groupBy('u.id').orderBy('u.id').limit(4));
  await step('left join count', async () => knex('kx_users as u').leftJoin('kx_events as e', 'e.user_id', 'u.id').select('u.plan').countDistinct('u.id as users').count('e.id as events').groupBy('u.plan').orderBy('u.plan'));
  await step('subquery whereIn', async () => (await knex('kx_users').whereIn('id', knex('kx_events').select('user_id').where('kind', 'refund')).orderBy('id').pluck('id')).length);
  await step('distinct', async () => knex('kx_events').distinct('kind').orderBy('kind').pluck('kind'));
  await step('with cte', async () => knex.with('big', knex('kx_events').where('amount', '>', 40)).select('kind').count('* as n').from('big').groupBy('kind').orderBy('kind'));
  await step('upsert merge', async () => { await knex('kx_users').insert({ id: 5, email: 'five@x.io', plan: 9 }).onConflict('id').merge(); return (await knex('kx_users').where('id', 5).first()).email; });
  await step('increment in trx', async () => knex.transaction(async trx => { await trx('kx_users').where('id', 1).increment('plan', 10); await trx('kx_users').where('id', 2).decrement('plan', 10); const r = await trx('kx_users').sum('plan as s').first(); return r.s; }));
  await step('update returning', async () => (await knex('kx_events').where('kind', 'refund').update({ amount: 0 }, ['id'])).length);
  await step('delete', async () => knex('kx_events').where('kind', 'view').andWhere('amount', '<', 10).del());
  await step('union', async () => (await knex('kx_users').select('id').where('plan', 0).union(function () { this.select('user_id').from('kx_events').where('kind', 'buy'); }).orderBy('id')).length);
  await step('raw window', async () => (await knex.raw('select user_id, sum(amount) s, rank() over (order by sum(amount) desc) r from kx_events group by user_id order by r, user_id limit 3')).rows);
  await step('final', async () => [await knex('kx_users').count('* as c').first(), await knex('kx_events').count('* as c').sum('amount as s').first()]);
  await step('drop', async () => { await knex.schema.dropTable('kx_events'); await knex.schema.dropTable('kx_users'); return 'ok'; });
  await knex.destroy();
}

async function typeorm() {
  orm = 'typeorm';
  const Author = new EntitySchema({ name: 'Author', tableName: 'to_authors', columns: { id: { type: 'bigint', primary: true }, name: { type: 'text' }, score: { type: 'int' } }, relations: { posts: { type: 'one-to-many', target: 'Post', inverseSide: 'author' } } });
  const Post = new EntitySchema({ name: 'Post', tableName: 'to_posts', columns: { id: { type: 'bigint', primary: true, generated: 'increment' }, author_id: { type: 'bigint', primary: true }, title: { type: 'text' }, likes: { type: 'int' } }, relations: { author: { type: 'many-to-one', target: 'Author', joinColumn: { name: 'author_id' }, inverseSide: 'posts', createForeignKeyConstraints: false } } });

  const ds = new DataSource({ type: 'postgres', url, entities: [Author, Post], synchronize: false, logging: false });
  await ds.initialize();
  const A = ds.getRepository('Author'), P = ds.getRepository('Post');
  await step('sync', async () => { await ds.synchronize(); return 'ok'; });
  await step('save authors', async () => (await A.save(Array.from({ length: 25 }, (_, i) => ({ id: i + 1, name: 'a' + (i + 1), score: (i * 7) % 10 })))).length);
  await step('save posts', async () => { const ps = []; for (let a = 1; a <= 25; a++) for (let k = 0; k < a % 4; k++) ps.push({ author: { id: a }, title: `t${a}-${k}`, likes: (a * 3 + k) % 11 }); return (await P.save(ps)).length; });
  await step('findOneBy', async () => (await A.findOneBy({ id: 9 })).name);
  await step('find relations paged', async () => (await A.find({ relations: { posts: true }, where: { score: MoreThan(3) }, order: { id: 'ASC', posts: { id: 'ASC' } }, skip: 2, take: 4 })).map(a => [a.id, a.posts.length]));
  await step('findAndCount', async () => { const [rows, n] = await A.findAndCount({ where: { score: In([1, 2, 3]) }, order: { id: 'DESC' }, take: 3 }); return [n, rows.map(r => r.id)]; });
  await step('qb join group', async () => A.createQueryBuilder('a').leftJoin('a.posts', 'p').select('a.score', 'score').addSelect('COUNT(p.id)', 'posts').addSelect('SUM(p.likes)', 'likes').groupBy('a.score').orderBy('a.score', 'ASC').getRawMany());
  await step('qb getManyAndCount joins', async () => { const [rows, n] = await A.createQueryBuilder('a').innerJoinAndSelect('a.posts', 'p').where('p.likes > :l', { l: 6 }).orderBy('a.id', 'ASC').skip(1).take(3).getManyAndCount(); return [n, rows.map(r => [r.id, r.posts.length])]; });
  await step('qb subquery', async () => (await A.createQueryBuilder('a').where(qb => 'a.id IN ' + qb.subQuery().select('p.author_id').from('Post', 'p').where('p.likes = 10').getQuery()).orderBy('a.id').getMany()).map(a => a.id));
  await step('count/sum', async () => [await P.count(), await P.sum('likes'), await P.maximum('likes'), await A.countBy({ score: 5 })]);
  await step('update', async () => (await A.update({ score: 0 }, { score: 9 })).affected);
  await step('upsert', async () => { await A.upsert({ id: 3, name: 'three', score: 33 }, ['id']); return (await A.findOneBy({ id: 3 })).name; });
  await step('transaction', async () => ds.transaction(async m => { await m.increment('Author', { id: 1 }, 'score', 5); await m.decrement('Author', { id: 2 }, 'score', 5); return m.sum('Author', 'score'); }));
  await step('delete', async () => (await P.delete({ likes: 0 })).affected);
  await step('final', async () => [await A.count(), await P.count(), await P.sum('likes')]);
  await step('drop', async () => { await ds.query('drop table to_posts; drop table to_authors'); return 'ok'; });
  await ds.destroy();
}

async function drizzleSteps() {
  orm = 'drizzle';
  const { Pool } = require('pg');
  const { drizzle } = require('drizzle-orm/node-postgres');
  const { pgTable, bigint, text, integer } = require('drizzle-orm/pg-core');
  const { relations, eq, gt, desc, inArray, count, sum } = require('drizzle-orm');
  const authors = pgTable('dz_authors', { id: bigint('id', { mode: 'number' }).primaryKey(), name: text('name'), city: text('city') });
  const posts = pgTable('dz_posts', { id: bigint('id', { mode: 'number' }).notNull(), authorId: bigint('author_id', { mode: 'number' }).notNull(), title: text('title'), likes: integer('likes') });
  const authorsRelations = relations(authors, ({ many }) => ({ posts: many(posts) }));
  const postsRelations = relations(posts, ({ one }) => ({ author: one(authors, { fields: [posts.authorId], references: [authors.id] }) }));
  const pool = new Pool({ connectionString: url, max: 2 });
  const db = drizzle(pool, { schema: { authors, posts, authorsRelations, postsRelations } });

  await step('create', async () => { await pool.query('create table dz_authors (id bigint primary key, name text, city text); create table dz_posts (id bigint not null, author_id bigint not null, title text, likes int, primary key (author_id, id))'); return 'ok'; });
  await step('insert authors', async () => (await db.insert(authors).values(Array.from({ length: 20 }, (_, i) => ({ id: i + 1, name: 'au' + (i + 1), city: 'c' + (i % 3) }))).returning({ id: authors.id })).length);
  await step('insert posts', async () => (await db.insert(posts).values(Array.from({ length: 70 }, (_, i) => ({ id: i + 1, authorId: (i % 17) + 1, title: 't' + (i + 1), likes: ((i + 1) * 7) % 30 })))).rowCount);
  // Relational queries: each relation is a LEFT JOIN LATERAL tied to its parent by the key,
  // paged through a derived table.
  await step('findMany with posts', async () => db.query.authors.findMany({ with: { posts: { orderBy: [desc(posts.likes), posts.id], limit: 2 } }, orderBy: [authors.id] }));
  await step('findFirst', async () => db.query.authors.findFirst({ where: eq(authors.id, 7), with: { posts: { orderBy: [posts.id] } } }));
  await step('posts with author', async () => db.query.posts.findMany({ with: { author: true }, where: gt(posts.likes, 25), orderBy: [posts.authorId, posts.id] }));
  await step('nested', async () => db.query.authors.findMany({ columns: { id: true }, with: { posts: { columns: { title: true }, orderBy: [posts.id], with: { author: { columns: { name: true } } } } }, where: inArray(authors.id, [1, 2, 3]), orderBy: [authors.id] }));
  await step('paged', async () => db.query.authors.findMany({ limit: 3, offset: 2, orderBy: [desc(authors.id)], with: { posts: { limit: 1, orderBy: [posts.id] } } }));
  await step('select join group', async () => db.select({ city: authors.city, n: count(posts.id), likes: sum(posts.likes) }).from(authors).leftJoin(posts, eq(posts.authorId, authors.id)).groupBy(authors.city).orderBy(authors.city));
  await step('update', async () => (await db.update(posts).set({ likes: 0 }).where(eq(posts.authorId, 5)).returning({ id: posts.id })).length);
  await step('transaction', async () => db.transaction(async (tx) => { await tx.delete(posts).where(eq(posts.likes, 0)); return (await tx.select({ n: count() }).from(posts))[0].n; }));
  await step('drop', async () => { await pool.query('drop table dz_posts; drop table dz_authors'); return 'ok'; });
  await pool.end();
}

(async () => {
  await sequelize();
  await knexSteps();
  await typeorm();
  await drizzleSteps();
  console.log(out.join('\n'));
})();
