"""A multi-tenant SQLAlchemy 2 ORM app written as for one PostgreSQL, run through shardgate on
three unlike shards (tests/clients.rs sets SHARDGATE_URL and SHARDGATE_DRIVER; `customers` is
sharded by id, `orders` by customer_id, `tenants` is a reference table, other tables are left to
`undeclared_tables`).

Serial keys everywhere, relationships with eager loading, pagination, aggregates, savepoints,
a transfer between customers on different shards, ids from an explicit Sequence, `func.now()` written on every shard in one
transaction, a server-side cursor (yield_per), bulk inserts, an order's primary key changed
(to a taken id and to a new one), and DDL the way Alembic runs it. Every check compares with values computed here.
Prints "orm app ok <driver>".
"""
import faulthandler
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import os
import statistics
import time
from datetime import datetime

from sqlalchemy import (BigInteger, DateTime, Enum, ForeignKey, Integer, Sequence, String,
                        and_, create_engine, func, select, text, tuple_, union, union_all,
                        update)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, joinedload, mapped_column,
                            relationship, selectinload)

DRIVER = os.environ["SHARDGATE_DRIVER"]
URL = os.environ["SHARDGATE_URL"].replace("postgres://", f"postgresql+{DRIVER}://", 1)
CUSTOMERS = 24
ORDERS_EACH = 3
STATES = ["new", "paid", "shipped"]
# The enum's declared order, which is not the labels' alphabetical one.
DECLARED = ["shipped", "new", "paid"]


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(30))


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(30))
    balance: Mapped[int] = mapped_column(BigInteger, default=100)
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    orders: Mapped[list["Order"]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[int] = mapped_column(Integer)
    # A native PostgreSQL ENUM (CREATE TYPE order_state AS ENUM), SQLAlchemy's default.
    state: Mapped[str] = mapped_column(Enum(*DECLARED, name="order_state"))
    customer: Mapped[Customer] = relationship(back_populates="orders")


class Payment(Base):
    # Sharded by customer_id (the key in its primary key), ids from an explicit Sequence: the
    # INSERT carries nextval('payments_id_seq') in its VALUES.
    __tablename__ = "payments"
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Sequence("payments_id_seq"), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)


def seed(s):
    s.add_all([Tenant(id=1, name="acme"), Tenant(id=2, name="globex")])
    s.commit()


def add_customers(s):
    # Objects with serial keys, flushed in bulk (insertmanyvalues with RETURNING).
    customers = [
        Customer(tenant_id=1 + i % 2, name=f"c{i}",
                 orders=[Order(amount=10 * i + j, state=STATES[(i + j) % 3])
                         for j in range(ORDERS_EACH)])
        for i in range(CUSTOMERS)
    ]
    s.add_all(customers)
    s.commit()
    ids = [c.id for c in customers]
    assert len(set(ids)) == CUSTOMERS, ids
    for c in customers:
        assert all(o.customer_id == c.id for o in c.orders)
    return ids


def read_back(s, ids):
    # Each object got back its own key: names and amounts line up.
    for i, cid in enumerate(ids):
        c = s.get(Customer, cid)
        assert c.name == f"c{i}", (cid, c.name)
        assert sorted(o.amount for o in c.orders) == [10 * i + j for j in range(ORDERS_EACH)]
    # Eager loading of a relationship over every shard.
    loaded = s.scalars(select(Customer).options(selectinload(Customer.orders))).all()
    assert len(loaded) == CUSTOMERS
    assert sum(len(c.orders) for c in loaded) == CUSTOMERS * ORDERS_EACH


def query(s, ids):
    # Pagination with bound LIMIT/OFFSET, and aggregates.
    page = s.scalars(select(Customer.name).order_by(Customer.id).limit(5).offset(5)).all()
    assert page == [f"c{i}" for i in range(5, 10)], page
    per_tenant = dict(s.execute(
        select(Customer.tenant_id, func.count()).group_by(Customer.tenant_id)
        .having(func.count() > 1)).all())
    assert per_tenant == {1: CUSTOMERS // 2, 2: CUSTOMERS // 2}, per_tenant
    # The count of the groups a bound HAVING value keeps, as a paginator asks it, and HAVING on
    # an average the select list leaves out.
    kept = select(Customer.tenant_id).group_by(Customer.tenant_id).having(func.count() > 1)
    assert s.scalar(select(func.count()).select_from(kept.subquery())) == 2
    by_state = {}
    for i in range(CUSTOMERS):
        for j in range(ORDERS_EACH):
            if (10 * i + j) % 4:
                by_state.setdefault(STATES[(i + j) % 3], []).append(10 * i + j)
    cut = int(sorted(sum(v) / len(v) for v in by_state.values())[1])
    above = s.scalars(select(Order.state).where(Order.amount % 4 != 0).group_by(Order.state)
                      .having(func.avg(Order.amount) >= cut)).all()
    assert sorted(above) == sorted(k for k, v in by_state.items() if sum(v) / len(v) >= cut), above
    assert 0 < len(above) < 3, (above, by_state)
    # Grouped by an enum column: its labels, counted over every shard.
    per_state = dict(s.execute(select(Order.state, func.count()).group_by(Order.state)).all())
    expected = {}
    for i in range(CUSTOMERS):
        for j in range(ORDERS_EACH):
            expected[STATES[(i + j) % 3]] = expected.get(STATES[(i + j) % 3], 0) + 1
    assert per_state == expected, per_state
    assert s.scalar(select(func.count(Order.state.distinct()))) == 3
    # Sorted by it: in the declared order, grouped or row by row.
    in_order = s.scalars(select(Order.state).group_by(Order.state).order_by(Order.state)).all()
    assert in_order == DECLARED, in_order
    newest = s.scalars(select(Order.state).order_by(Order.state.desc(), Order.id).limit(5)).all()
    assert newest == ["paid"] * 5, newest
    total = s.scalar(select(func.sum(Order.amount)))
    assert total == sum(10 * i + j for i in range(CUSTOMERS) for j in range(ORDERS_EACH))
    assert s.query(Customer).filter(Customer.tenant_id == 1).count() == CUSTOMERS // 2
    rich = s.scalars(select(Customer.id).where(Customer.orders.any(Order.amount > 200))).all()
    assert sorted(rich) == sorted(ids[i] for i in range(CUSTOMERS) if 10 * i + 2 > 200)
    # exists(): SELECT EXISTS (SELECT ...), asked of every shard.
    assert s.scalar(select(select(Order.id).where(Order.amount > 200).exists())) is True
    assert s.scalar(select(select(Order.id).where(Order.amount > 10**6).exists())) is False
    # A correlated count per row (scalar_subquery), tied to the row by the shard key.
    counts = (select(func.count(Order.id)).where(Order.customer_id == Customer.id)
              .scalar_subquery())
    per_customer = s.execute(select(Customer.id, counts).order_by(Customer.id)).all()
    assert per_customer == [(cid, ORDERS_EACH) for cid in sorted(ids)], per_customer
    # Items over aggregates, computed from the merged totals: a rounded average (its 2 bound
    # as a parameter), a count cast to integer, a ratio of two sums, per tenant.
    amounts = [10 * i + j for i in range(CUSTOMERS) for j in range(ORDERS_EACH)]
    rounded, n, ratio = s.execute(select(
        func.round(func.avg(Order.amount), 2), func.count().cast(Integer),
        func.sum(Order.amount) * 1.0 / func.count())).one()
    assert (str(rounded), n) == (f"{sum(amounts) / len(amounts):.2f}", len(amounts)), rounded
    assert round(float(ratio), 6) == round(sum(amounts) / len(amounts), 6), ratio
    # Aggregates over every shard's values, evaluated once: a median (its fraction bound), the
    # commonest state (ties go to the first in the enum's order), names in descending key order.
    median = s.scalar(select(func.percentile_cont(0.5).within_group(Order.amount)))
    assert median == statistics.median(amounts), median
    counted = {st: sum(1 for i in range(CUSTOMERS) for j in range(ORDERS_EACH) if STATES[(i + j) % 3] == st)
               for st in STATES}
    commonest = min(DECLARED, key=lambda st: (-counted[st], DECLARED.index(st)))
    assert s.scalar(select(func.mode().within_group(Order.state))) == commonest
    names = s.scalar(select(func.array_agg(aggregate_order_by(Customer.name, Customer.id.desc()))))
    assert names == [f"c{i}" for _, i in sorted(((ids[i], i) for i in range(CUSTOMERS)), reverse=True)], names
    per_tenant = s.execute(
        select(Customer.tenant_id, (func.max(Customer.balance) - func.min(Customer.balance))
               .label("spread"))
        .group_by(Customer.tenant_id).order_by(Customer.tenant_id)).all()
    assert [t for t, _ in per_tenant] == [1, 2], per_tenant
    # union(): one of each value over every shard, a reference table's branch among them,
    # ordered by the output column's name and paged with bound values.
    both = union(select(Order.amount).where(Order.amount < 25), select(Tenant.id))
    page = s.scalars(both.order_by(both.selected_columns.amount).limit(5).offset(1)).all()
    small = {10 * i + j for i in range(CUSTOMERS) for j in range(ORDERS_EACH) if 10 * i + j < 25}
    assert page == sorted(small | {1, 2})[1:6], page
    # union_all() keeps every row of each branch.
    every = s.scalars(union_all(select(Order.customer_id).where(Order.amount > 200),
                                select(Customer.id).where(Customer.tenant_id == 1))).all()
    big = [i for i in range(CUSTOMERS) for j in range(ORDERS_EACH) if 10 * i + j > 200]
    assert sorted(every) == sorted([ids[i] for i in big] + ids[0::2]), every


def answered_first(s, ids):
    # Subqueries over every shard that name nothing of the outer query, answered first by the
    # proxy with their bound values, and an outer join keeping a reference table's rows (read
    # in two parts); it needs one snapshot for them and the statement, which a READ COMMITTED
    # transaction block (the Session's default) does not give: refused there.
    biggest = select(func.max(Order.amount)).scalar_subquery()
    top = select(Order.customer_id).order_by(Order.amount.desc()).limit(4)
    try:
        s.scalars(select(Order.customer_id).where(Order.amount == biggest)).all()
        raise AssertionError("a READ COMMITTED transaction block answered it")
    except DBAPIError as e:
        assert "REPEATABLE READ" in str(e), e
    s.rollback()
    s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    assert s.scalars(select(Order.customer_id).where(Order.amount == biggest)).all() == [ids[-1]]
    named = s.scalars(select(Customer.name).where(Customer.id.in_(top)).order_by(Customer.name))
    assert named.all() == ["c22", "c23"]
    # A row compared with rows (tuple_().in_()): the rows read first, written back as VALUES.
    owners = select(Order.customer_id, func.concat("c", func.div(Order.amount, 10))).where(Order.amount > 225)
    pair = tuple_(Customer.id, Customer.name)
    assert s.scalars(select(Customer.name).where(pair.in_(owners))).all() == ["c23"]
    assert s.scalar(select(func.count()).where(pair.not_in(owners))) == CUSTOMERS - 1
    # Every tenant (a reference table) with its customers named c3, or none: a tenant no
    # shard matches comes back once, and one matched on some shard only matched.
    kept = s.execute(select(Tenant.name, Customer.name)
                     .outerjoin(Customer, and_(Customer.tenant_id == Tenant.id, Customer.name == "c3"))
                     .order_by(Tenant.name)).all()
    assert [tuple(r) for r in kept] == [("acme", None), ("globex", "c3")], kept
    # joinedload over a LIMIT: the limited customers (answered first, a VALUES list every
    # shard reads whole) outer-joined to their orders, and those without one kept once.
    first = s.scalars(select(Customer).options(joinedload(Customer.orders))
                      .order_by(Customer.id).limit(3)).unique().all()
    assert [c.id for c in first] == sorted(ids)[:3], first
    assert [sorted(o.amount for o in c.orders) for c in first] == [
        [10 * ids.index(c.id) + j for j in range(ORDERS_EACH)] for c in first]
    last = select(Customer.id, Customer.name).order_by(Customer.id.desc()).limit(5).subquery()
    rows = s.execute(select(last.c.name, Order.amount)
                     .outerjoin(Order, and_(Order.customer_id == last.c.id, Order.amount > 225))
                     .order_by(last.c.name, Order.amount)).all()
    want = sorted((f"c{i}", a) for i in range(CUSTOMERS - 5, CUSTOMERS)
                  for a in ([10 * i + j for j in range(ORDERS_EACH) if 10 * i + j > 225] or [None]))
    assert [tuple(r) for r in rows] == want, rows
    assert any(a is None for _, a in want) and any(a is not None for _, a in want), want
    # An ORM bulk UPDATE whose subquery (an aggregate over every shard) is answered first,
    # with its values bound inside and outside the subquery; the write then runs where its
    # rows are, in this transaction.
    mean = select(func.avg(Order.amount)).where(Order.amount >= 0).scalar_subquery()
    raised = s.execute(update(Order).where(Order.amount > mean + 100)
                       .values(amount=Order.amount + 1000)
                       .execution_options(synchronize_session=False))
    assert raised.rowcount == 2 * ORDERS_EACH, raised.rowcount
    assert s.scalar(select(func.count()).where(Order.amount > 1000)) == 2 * ORDERS_EACH
    s.execute(update(Order).where(Order.amount > 1000).values(amount=Order.amount - 1000)
              .execution_options(synchronize_session=False))
    s.commit()


def transfer(s, ids):
    # Between two customers (on different shards, most likely), with a savepoint that rolls
    # back.
    a, b = s.get(Customer, ids[0]), s.get(Customer, ids[-1])
    a.balance -= 30
    b.balance += 30
    s.flush()
    nested = s.begin_nested()
    s.execute(update(Customer).where(Customer.id == ids[1]).values(balance=0))
    nested.rollback()
    s.commit()


def check_transfer(s, ids):
    assert s.scalar(select(func.sum(Customer.balance))) == 100 * CUSTOMERS
    assert s.get(Customer, ids[1]).balance == 100
    assert s.get(Customer, ids[0]).balance == 70


def touch(s, ids):
    # func.now() in a transaction that reaches one shard, waits, then writes every shard: one
    # PostgreSQL gives every row the transaction's start, and so must the shards.
    s.get(Customer, ids[0])
    time.sleep(0.2)
    s.execute(update(Customer).values(touched_at=func.now()))
    started = s.scalar(select(func.now()))
    s.commit()
    assert s.scalar(select(func.count(Customer.touched_at.distinct()))) == 1
    assert s.scalar(select(func.max(Customer.touched_at))) == started


def stream(s, ids):
    # A server-side cursor over every shard.
    streamed = [c.id for c in s.scalars(select(Customer).execution_options(yield_per=7))]
    assert sorted(streamed) == sorted(ids)


def renumber(s, ids):
    # An order's primary key changed through the ORM (UPDATE orders SET id=... WHERE
    # orders.id=..., over every shard): to the id of another customer's order, on whichever
    # shard it lives, PostgreSQL's unique violation; to a new id, it sticks.
    mine = s.scalars(select(Order.id).where(Order.customer_id == ids[0])).first()
    taken = s.scalars(select(func.min(Order.id)).where(Order.customer_id != ids[0])
                      .group_by(Order.customer_id)).all()
    assert len(taken) == CUSTOMERS - 1, taken
    for other in taken:
        s.get(Order, mine).id = other
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
        else:
            raise AssertionError(f"order id {other} written twice")
    new = max(taken) + 500
    s.get(Order, mine).id = new
    s.commit()
    assert s.get(Order, new).customer_id == ids[0]
    later = [Order(customer_id=ids[1], amount=1, state="new") for _ in range(3)]
    s.add_all(later)
    s.commit()
    every = s.scalars(select(Order.id)).all()
    assert len(every) == len(set(every)) == CUSTOMERS * ORDERS_EACH + 3, every


def pay(s, ids):
    # Payments for customers on every shard, one at a time and in bulk: every id from the one
    # sequence, none handed out twice.
    for cid in ids:
        s.add(Payment(customer_id=cid, amount=1))
        s.flush()
    s.add_all([Payment(customer_id=cid, amount=2) for cid in ids])
    s.commit()
    drawn = s.scalar(Sequence("payments_id_seq").next_value())
    every = s.scalars(select(Payment.id)).all()
    assert len(every) == len(set(every)) == 2 * len(ids), sorted(every)
    assert drawn not in every, drawn


def migrate(conn):
    # DDL as Alembic runs it: its version table, a new column, an index.
    conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                      "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('abc123')"))
    conn.execute(text("ALTER TABLE customers ADD COLUMN note VARCHAR(50)"))
    conn.execute(text("CREATE INDEX ix_customers_name ON customers (name)"))
    conn.execute(text("UPDATE alembic_version SET version_num='def456' "
                      "WHERE alembic_version.version_num = 'abc123'"))


def check_migration(conn):
    assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "def456"


def main():
    engine = create_engine(URL)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        seed(s)
    with Session(engine) as s:
        ids = add_customers(s)
    for step in (read_back, query, answered_first, transfer, check_transfer, touch, stream, renumber, pay):
        with Session(engine) as s:
            step(s, ids)
    with engine.begin() as conn:
        migrate(conn)
    with engine.connect() as conn:
        check_migration(conn)


async def main_async():
    # The same app on SQLAlchemy's asyncio engine: each step runs in the session's greenlet.
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    engine = create_async_engine(URL)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as s:
        await s.run_sync(seed)
    async with AsyncSession(engine) as s:
        ids = await s.run_sync(add_customers)
    for step in (read_back, query, answered_first, transfer, check_transfer, touch, stream, renumber, pay):
        async with AsyncSession(engine) as s:
            await s.run_sync(step, ids)
    async with engine.begin() as conn:
        await conn.run_sync(migrate)
    async with engine.connect() as conn:
        await conn.run_sync(check_migration)
    await engine.dispose()


if DRIVER == "asyncpg":
    import asyncio
    asyncio.run(main_async())
else:
    main()
print(f"orm app ok {DRIVER}")
