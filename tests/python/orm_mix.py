"""A SQLAlchemy transaction mix through shardgate on three unlike shards (tests/clients.rs sets
SHARDGATE_URL and SHARDGATE_MODE; `accounts` is sharded by id, `plans` is a reference table).

Schema by `create_all` (a catalog read, then CREATE TABLE, in one transaction), then typical
ORM transactions at the default level and at REPEATABLE READ: read two tenants' accounts,
transfer between accounts on different shards, load a row then lazy-load its reference row,
count one tenant then all. Every transaction must commit; the total must hold throughout.
Prints "sqlalchemy mix ok <mode> <transactions>".
"""
import faulthandler
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import os
import random

from sqlalchemy import BigInteger, ForeignKey, Integer, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

URL = os.environ["SHARDGATE_URL"].replace("postgres://", "postgresql+psycopg://", 1)
MODE = os.environ["SHARDGATE_MODE"]
ACCOUNTS = 30
START = 100


class Base(DeclarativeBase):
    pass


class Plan(Base):
    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(20))


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant: Mapped[int] = mapped_column(Integer)
    balance: Mapped[int] = mapped_column(BigInteger)
    # No foreign key constraint: the plan rows live on every shard, the account on one.
    plan_id: Mapped[int] = mapped_column(Integer)
    plan: Mapped[Plan] = relationship(
        primaryjoin="foreign(Account.plan_id) == Plan.id", lazy="select"
    )


def total(session):
    return session.scalar(select(func.sum(Account.balance)))


def mix(engine, rounds, rng):
    """Runs `rounds` of the five transactions; returns how many committed."""
    done = 0
    for _ in range(rounds):
        a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
        tenant = rng.randint(1, 3)
        # Read two tenants' accounts.
        with Session(engine) as s, s.begin():
            first = s.scalars(select(Account).where(Account.tenant == 1)).all()
            second = s.scalars(select(Account).where(Account.tenant == 2)).all()
            assert len(first) + len(second) == 20
        done += 1
        # Transfer between two accounts (usually on different shards).
        with Session(engine) as s, s.begin():
            x, y = s.get(Account, a), s.get(Account, b)
            x.balance -= 7
            y.balance += 7
        done += 1
        # Load a row, then lazy-load its reference row.
        with Session(engine) as s, s.begin():
            acc = s.get(Account, a)
            assert acc.plan.name == f"plan{acc.plan_id}", acc.plan.name
        done += 1
        # Count one tenant, then all.
        with Session(engine) as s, s.begin():
            n = s.scalar(select(func.count()).select_from(Account).where(Account.tenant == tenant))
            assert n == 10, n
            assert s.scalar(select(func.count()).select_from(Account)) == ACCOUNTS
        done += 1
        # The total holds, read as the ORM reads it.
        with Session(engine) as s, s.begin():
            assert total(s) == ACCOUNTS * START
        done += 1
    return done


def main():
    engine = create_engine(URL, pool_size=2)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    # A second create_all finds every table (the catalog read) and creates nothing.
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Plan(id=i, name=f"plan{i}") for i in range(1, 4)])
        s.add_all(
            [
                Account(id=i, tenant=1 + (i - 1) % 3, balance=START, plan_id=1 + i % 3)
                for i in range(1, ACCOUNTS + 1)
            ]
        )
    rng = random.Random(11)
    committed = mix(engine, 11, rng)
    rr = engine.execution_options(isolation_level="REPEATABLE READ")
    committed += mix(rr, 10, rng)
    with Session(engine) as s:
        assert total(s) == ACCOUNTS * START
    Base.metadata.drop_all(engine)
    engine.dispose()
    print(f"sqlalchemy mix ok {MODE} {committed}")


main()
