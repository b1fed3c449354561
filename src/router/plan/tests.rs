use super::*;
use crate::config::Config;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub(super) fn placement() -> Placement {
    let mut text = String::from("[[users]]\nname=\"a\"\nauth=\"trust\"\n");
    for i in 0..3 {
        text.push_str(&format!(
            "[[shards]]\nname=\"s{i}\"\nurl=\"postgres://u@h/db\"\n"
        ));
    }
    text.push_str(
        "[tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
         [tables.ledger]\nshard_key=\"account_id\"\nkey_type=\"bigint\"\n\
         [tables.users]\nshard_key=\"name\"\nkey_type=\"text\"\n\
         [tables.countries]\nreference=true\n",
    );
    Config::from_toml(&text).unwrap().placement().unwrap()
}

fn plan_sql(sql: &str) -> Plan {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
    plan(&stmts[0], &placement(), &Params::default())
}

fn shard_of(id: i64) -> usize {
    placement().shard_of(&KeyValue::Integer(id))
}

fn sort_columns(merge: &MergeSpec) -> Vec<SortColumn> {
    merge.order.iter().map(|k| k.column.clone()).collect()
}

fn code(p: &Plan) -> &str {
    match p {
        Plan::Reject(e) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn point_reads_and_writes_go_to_the_owner() {
    assert_eq!(
        plan_sql("select * from accounts where id = 42"),
        Plan::Shard {
            shard: shard_of(42),
            write: false
        }
    );
    assert_eq!(
        plan_sql("update accounts set v = 1 where id = 42 and v > 0"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    assert_eq!(
        plan_sql("delete from accounts a where a.id = 42"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    assert_eq!(
        plan_sql("insert into accounts (id, v) values (42, 1)"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    assert_eq!(
        plan_sql("select * from accounts where id = 42 for update"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
}

#[test]
fn reads_without_a_key_scatter_with_limit_pushed_down() {
    let Plan::Scatter { shards, sql, merge } =
        plan_sql("select id, v from accounts order by v desc, 1 limit 5 offset 2")
    else {
        panic!()
    };
    assert_eq!(shards, vec![0, 1, 2]);
    assert!(sql.ends_with("LIMIT 7"), "{sql}");
    assert_eq!((merge.limit, merge.offset), (Some(5), 2));
    assert_eq!(
        merge.order[0],
        SortKey {
            column: SortColumn::Position(2),
            descending: true,
            nulls_first: true,
            bytewise: false,
        }
    );
    assert_eq!(merge.order[1].column, SortColumn::Position(1));
    let Plan::Scatter { merge, .. } = plan_sql("select * from accounts order by v") else {
        panic!()
    };
    assert_eq!(merge.order[0].column, SortColumn::Name("v".into()));
}

#[test]
fn in_lists_pick_the_owning_shards() {
    let ids: Vec<i64> = (1..50).collect();
    let owners: BTreeSet<usize> = ids.iter().map(|&i| shard_of(i)).collect();
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    match plan_sql(&format!("select * from accounts where id in ({list})")) {
        Plan::Scatter { shards, .. } => {
            assert_eq!(shards, owners.into_iter().collect::<Vec<_>>())
        }
        Plan::Shard { .. } => assert_eq!(owners.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn joins_colocated_or_with_reference_tables_stay_on_one_shard() {
    assert_eq!(
        plan_sql("select * from accounts a join ledger l on l.account_id = a.id join countries c on c.code = a.cc where a.id = 7"),
        Plan::Shard { shard: shard_of(7), write: false }
    );
    assert_eq!(
        code(&plan_sql(
            "select * from accounts a join ledger l on l.note = a.name"
        )),
        "0A000"
    );
    assert_eq!(
        code(&plan_sql(
            "select * from accounts a join users u on u.name = a.id::text"
        )),
        "0A000"
    );
    assert_eq!(
        plan_sql("select * from countries"),
        Plan::Shard {
            shard: HOME,
            write: false
        }
    );
}

#[test]
fn refusals() {
    for sql in [
        "update accounts set id = 5 where id = 4",
        "insert into accounts values (1)",
        "insert into accounts (v) values (1)",
        "insert into accounts (id) select account_id from ledger",
        "insert into accounts (id) select id + 1 from accounts where id = 5",
        "insert into accounts (id) select 7 from countries",
        "select * from nosuch",
        "select * from accounts where id not in (select account_id from ledger)",
        "select * from accounts a where exists (select 1 from ledger l where l.amount = a.id)",
        "select * from accounts where id in (select account_id from ledger limit 3)",
        "select * from accounts a where exists (select 1 from users u where u.name = a.v)",
        "select (select count(*) from ledger l where l.amount = a.id) from accounts a",
        "create table accounts (id bigint primary key, n bigint generated always as identity)",
        "create table accounts (id bigint generated always as identity)",
        "create table users (name text primary key default nextval('s')::text)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    // Subqueries tied to the outer table by the shard key run on each shard as written.
    for sql in [
        "select * from accounts where id in (select account_id from ledger)",
        "select * from accounts a where exists (select 1 from ledger l where l.account_id = a.id and l.amount > 0)",
        "select * from accounts a where not exists (select 1 from ledger l where a.id = l.account_id)",
    ] {
        assert!(
            matches!(plan_sql(sql), Plan::Scatter { ref merge, .. } if *merge == MergeSpec::default()),
            "{sql}"
        );
    }
    assert!(matches!(
        plan_sql("select * from accounts a where a.id = 5 and exists (select 1 from ledger l where l.account_id = a.id)"),
        Plan::Shard { shard, .. } if shard == shard_of(5)
    ));
    // A sequence on an integer key is filled in by the proxy (see executor::key_sequence).
    for sql in [
        "create table accounts (id bigserial primary key)",
        "create table accounts (id bigint generated by default as identity primary key)",
        "create table ledger (id bigserial primary key, account_id bigint)",
    ] {
        assert!(matches!(plan_sql(sql), Plan::Broadcast { .. }), "{sql}");
    }
}

#[test]
fn writes_on_several_shards_are_split_per_shard() {
    let Plan::Write {
        parts, sum: true, ..
    } = plan_sql(
        "insert into accounts (id, v) values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')",
    ) else {
        panic!("a split insert")
    };
    assert!(parts.len() > 1);
    let mut rows = 0;
    for (shard, sql) in &parts {
        let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
        // Each part holds exactly the rows its shard owns.
        assert_eq!(
            plan(stmt, &placement(), &Params::default()),
            Plan::Shard {
                shard: *shard,
                write: true
            },
            "{sql}"
        );
        rows += sql.matches("), (").count() + 1;
    }
    assert_eq!(rows, 6);
    let Plan::Write {
        parts, sum: true, ..
    } = plan_sql("update accounts set v = 0")
    else {
        panic!("an update everywhere")
    };
    assert_eq!(parts.len(), 3);
    let Plan::Write {
        parts, sum: false, ..
    } = plan_sql("insert into countries (code) values ('x')")
    else {
        panic!("a reference write counts one copy")
    };
    assert_eq!(parts.len(), 3);
    assert!(matches!(
        plan_sql("delete from accounts where id in (1, 2, 3, 4, 5, 6)"),
        Plan::Write { sum: true, .. }
    ));
}

#[test]
fn shardgate_settings_are_answered_by_the_proxy() {
    for sql in [
        "set shardgate.consistency = 'snapshot'",
        "SET shardgate.consistency TO snapshot",
        "set session shardgate.consistency='snapshot'",
    ] {
        let value = match plan_sql(sql) {
            Plan::Admin(AdminCmd::Set { name, value }) if name == "consistency" => value,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(value.trim_matches('\''), "snapshot", "{sql}");
    }
    assert_eq!(plan_sql("set work_mem = '4MB'"), Plan::Session);
    assert_eq!(
        plan_unparsed("SHOW shardgate.snapshot_ts"),
        Plan::Admin(AdminCmd::Show {
            name: "snapshot_ts".into()
        })
    );
}

#[test]
fn savepoints_are_transaction_commands() {
    assert_eq!(
        plan_sql("savepoint a"),
        Plan::Txn(TxnCmd::Savepoint("a".into()))
    );
    assert_eq!(
        plan_sql("release savepoint a"),
        Plan::Txn(TxnCmd::Release("a".into()))
    );
    assert_eq!(
        plan_sql("rollback to savepoint \"A\""),
        Plan::Txn(TxnCmd::RollbackTo("\"A\"".into()))
    );
    assert_eq!(
        plan_unparsed("ROLLBACK TO b;"),
        Plan::Txn(TxnCmd::RollbackTo("b".into()))
    );
}

#[test]
fn insert_select_only_within_one_shard() {
    assert_eq!(
        plan_sql(
            "insert into ledger (account_id, v) select a.id, a.v from accounts a where a.id = 42"
        ),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
}

#[test]
fn aggregates_rewrite_avg_and_push_nothing_down() {
    let Plan::Scatter { sql, merge, .. } = plan_sql(
        "select v, avg(x) from accounts group by v having count(*) > 2 order by 2 desc limit 3",
    ) else {
        panic!()
    };
    assert_eq!(sql, "SELECT v, sum(x) AS avg, count(x) AS __shardgate_count_1, sum((x) * 1::FLOAT8) AS __shardgate_fsum_1, count(*) AS __shardgate_extra_2 FROM accounts GROUP BY v");
    let spec = merge.aggregate.unwrap();
    use crate::router::aggregate::AggColumn::*;
    assert_eq!(
        spec.columns,
        vec![
            Group,
            Avg {
                count: 2,
                float_sum: Some(3)
            },
            AvgCount,
            AvgFloatSum,
            Count
        ]
    );
    assert_eq!((merge.limit, merge.hidden), (Some(3), 3));
    let Plan::Scatter { sql, merge, .. } =
        plan_sql("select count(distinct v), count(*) from accounts")
    else {
        panic!()
    };
    assert_eq!(
        sql,
        "SELECT count(DISTINCT v), count(*), v AS __shardgate_distinct_0 FROM accounts GROUP BY v"
    );
    let spec = merge.aggregate.unwrap();
    assert_eq!(
        spec.columns,
        vec![
            CountDistinct { values: 2 },
            Count,
            DistinctValue { with_null: false }
        ]
    );
    assert!(spec.single_group);
    for sql in [
        "select sum(distinct v) from accounts",
        "select count(distinct (v, x)) filter (where x > 1) from accounts",
        "select v from accounts group by v having sum(x) > min(y)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn ddl_session_and_transactions() {
    assert_eq!(
        plan_sql("create table accounts (id bigint primary key, v int)"),
        Plan::Broadcast {
            transactional: true
        }
    );
    assert_eq!(
        plan_sql("create index concurrently i on accounts (v)"),
        Plan::Broadcast {
            transactional: false
        }
    );
    assert_eq!(
        plan_sql("drop database if exists other"),
        Plan::Broadcast {
            transactional: false
        }
    );
    assert_eq!(plan_sql("set search_path = x"), Plan::Session);
    assert_eq!(
        plan_sql("select set_config('search_path', 'x', false)"),
        Plan::Session
    );
    assert_eq!(plan_sql("commit"), Plan::Txn(TxnCmd::Commit));
    assert!(matches!(
        plan_sql("begin isolation level repeatable read"),
        Plan::Txn(TxnCmd::Begin(_))
    ));
    assert_eq!(
        plan_unparsed("SHOW shardgate.route accounts 42"),
        Plan::Admin(AdminCmd::Route {
            table: "accounts".into(),
            key: "42".into()
        })
    );
}

#[test]
fn only_a_set_of_another_client_encoding_is_refused() {
    let refused = |sql: &str| matches!(plan_unparsed(sql), Plan::Reject(_));
    assert!(refused("SET client_encoding TO 'LATIN1'"));
    assert!(refused("Set Session Names latin9;"));
    assert!(refused("set client_encoding = euc_jp"));
    assert!(!refused("SET client_encoding TO 'UTF8'"));
    assert!(!refused("set names 'utf-8'"));
    assert!(!refused("set client_encoding to default"));
    assert!(!refused("select 'set client_encoding latin1'"));
    assert!(!refused("settle client_encoding latin1"));
}

#[test]
fn currval_and_lastval_are_refused_wherever_they_appear() {
    for sql in [
        "select currval('s')",
        "SELECT pg_catalog.LASTVAL()",
        "select * from accounts where id = currval('accounts_id_seq')",
        "insert into accounts (id, owner) values (1, 'a') returning lastval()",
        "update accounts set balance = currval('s') where id = 1",
        "select nextval('s'), currval('s')",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
        let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
        assert!(check_at_parse(stmt, &placement()).is_some(), "{sql}");
    }
    assert!(!matches!(plan_sql("select nextval('s')"), Plan::Reject(_)));
    assert!(!matches!(
        plan_sql("select 'currval(1)' from countries"),
        Plan::Reject(_)
    ));
}

#[test]
fn signals_of_minted_pids_are_the_proxys_and_never_learned() {
    let bound = |pid: &str| Params {
        values: [Some(bytes::Bytes::copy_from_slice(pid.as_bytes()))]
            .into_iter()
            .collect(),
        formats: vec![],
        types: Default::default(),
    };
    let parsed = |sql: &str| Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
    let stmt = parsed("select pg_terminate_backend($1)");
    let (minted, reads) =
        crate::router::params::recording(|| plan(&stmt[0], &placement(), &bound("5000000")));
    assert_eq!(
        minted,
        Plan::Signal {
            kind: crate::sql::signal_call::SignalKind::Terminate,
            pid: 5_000_000,
            column: "pg_terminate_backend".into()
        }
    );
    assert!(
        !reads.is_empty(),
        "the pid was read: the plan is not reused"
    );
    // A backend's pid is the shard's to signal, and that planning too read the value.
    let (real, reads) =
        crate::router::params::recording(|| plan(&stmt[0], &placement(), &bound("4242")));
    assert!(matches!(real, Plan::Shard { .. }), "{real:?}");
    assert_eq!(reads, vec![crate::router::params::Read::Other]);
    assert!(matches!(
        plan_sql("select pg_catalog.pg_cancel_backend(4194305) as c"),
        Plan::Signal { pid: 4194305, ref column, .. } if column == "c"
    ));
    assert!(matches!(
        plan_sql("select pg_cancel_backend(4194304)"),
        Plan::Shard { .. }
    ));
    assert!(matches!(
        plan_sql("select pg_cancel_backend(pid) from pg_stat_activity"),
        Plan::Shard { .. }
    ));
}

#[test]
fn built_in_aggregates_are_listed_in_order_for_the_binary_search() {
    assert!(BUILT_IN_AGGREGATES.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn aggregates_the_merge_cannot_combine_are_refused_wherever_they_stand() {
    let mut defined = placement();
    defined.aggregates = std::sync::Arc::new(["total".to_string()].into_iter().collect());
    let plan_with = |sql: &str, p: &Placement| {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        plan(&stmts[0], p, &Params::default())
    };
    for sql in [
        "select regr_count(v, x) from accounts",
        "select distinct corr(v, x) from accounts",
        "select * from (select bit_xor(v) from accounts) s",
        "select v from accounts order by count(*)",
        "select v from accounts order by rank() over (order by x)",
        "select public.total(v) from accounts",
        "select distinct Total(v) from accounts",
    ] {
        assert_eq!(code(&plan_with(sql, &defined)), "0A000", "{sql}");
    }
    // An aggregate in ORDER BY alone still makes one group: its constant is carried.
    assert!(matches!(
        plan_sql("select 1 from accounts order by count(*)"),
        Plan::Scatter { ref merge, .. } if merge.aggregate.as_ref().is_some_and(|a| a.single_group)
    ));
    // Without the shards' own aggregate, the same name is a plain function.
    assert!(matches!(
        plan_with("select total(v) from accounts", &placement()),
        Plan::Scatter { ref merge, .. } if merge.aggregate.is_none()
    ));
    // On one shard any aggregate is exact.
    assert!(matches!(
        plan_with("select total(v) from accounts where id = 1", &defined),
        Plan::Shard { .. }
    ));
    let Plan::Scatter { merge, .. } =
        plan_sql("select bool_and(b), bool_or(b), every(b) from accounts")
    else {
        panic!()
    };
    use crate::router::aggregate::AggColumn::{Max, Min};
    assert_eq!(merge.aggregate.unwrap().columns, vec![Min, Max, Min]);
}

#[test]
fn outer_joins_that_keep_a_reference_sides_rows_are_refused_over_several_shards() {
    for sql in [
        "select * from countries c left join accounts a on a.country = c.code",
        "select * from accounts a right join countries c on a.country = c.code",
        "select * from accounts a full join countries c on a.country = c.code",
        "select * from generate_series(1, 3) g left join accounts a on a.id = g",
        "select * from (countries c left join accounts a on a.country = c.code) join ledger l on l.account_id = 1",
        "select * from ledger l join (countries c left join accounts a on a.country = c.code) on true",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    for sql in [
        "select * from accounts a left join countries c on a.country = c.code",
        "select * from countries c right join accounts a on a.country = c.code",
        "select * from countries c join accounts a on a.country = c.code",
        "select * from accounts a left join ledger l on l.account_id = a.id",
        "select * from accounts a full join ledger l on l.account_id = a.id",
        "select * from countries c left join countries d on d.code = c.code, accounts a",
    ] {
        assert!(matches!(plan_sql(sql), Plan::Scatter { .. }), "{sql}");
    }
    let Plan::Reject(e) =
        plan_sql("select * from countries c left join accounts a on a.country = c.code")
    else {
        panic!()
    };
    assert!(
        e.message
            .contains("left side, which holds no sharded table, against a sharded table"),
        "{}",
        e.message
    );
    // On one shard the reference rows come back once.
    assert!(matches!(
        plan_sql(
            "select * from countries c left join accounts a on a.country = c.code where a.id = 4"
        ),
        Plan::Shard { .. }
    ));
}

#[test]
fn numbers_that_are_not_integers_are_no_integer_keys() {
    // PostgreSQL compares them as numeric: 5.0 finds 5, 5.5 and 1e30 find nothing.
    for sql in [
        "select * from accounts where id = 5.0",
        "select * from accounts where id in (5.5, 7)",
        "select * from accounts where id = 99999999999999999999",
        "select * from accounts where id = -5.0",
    ] {
        assert!(matches!(plan_sql(sql), Plan::Scatter { .. }), "{sql}");
    }
    assert!(matches!(
        plan_sql("select * from accounts where id = 5"),
        Plan::Shard { .. }
    ));
    assert_eq!(
        code(&plan_sql("insert into accounts (id) values (5.0)")),
        "0A000"
    );
}

#[test]
fn writes_that_read_other_shards_rows_are_refused() {
    for sql in [
        // Each shard would count, average or look up its own rows only.
        "update accounts set v = (select count(*) from ledger)",
        "update accounts set v = (select count(*) from ledger) where id = 3",
        "delete from accounts where v < (select avg(v) from accounts)",
        "delete from accounts a where exists (select 1 from ledger l where l.amount = a.v)",
        "update accounts set v = 0 where id in (select id from accounts where v > 1) returning (select count(*) from ledger)",
        "insert into accounts (id, v) values (7, (select max(v) from accounts))",
        "insert into accounts (id, v) values (7, 1) on conflict (id) do update set v = (select count(*) from ledger)",
        // Every copy of a reference table would be written by a different answer.
        "update countries set name = (select max(name) from users)",
        "delete from countries where code in (select country from accounts)",
        "insert into countries select country, country from accounts",
        "insert into countries (code) values ((select min(country) from accounts))",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    // Tied to the written rows by the key, or reading reference tables: as before.
    for sql in [
        "update accounts set v = 0 where id in (select account_id from ledger where amount > 5)",
        "delete from accounts a where exists (select 1 from ledger l where l.account_id = a.id)",
        "update accounts set v = (select count(*) from countries)",
        "insert into accounts (id, v) values (1, (select count(*) from countries))",
        "update countries set name = (select max(name) from countries)",
    ] {
        let planned = plan_sql(sql);
        assert!(!matches!(planned, Plan::Reject(_)), "{sql}: {planned:?}");
    }
}

#[test]
fn relations_made_from_sharded_rows_are_refused_where_one_shard_would_be_read() {
    for sql in [
        "create table copied as select * from accounts",
        "select * into copied from accounts where v > 1",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    assert!(matches!(
        plan_sql("create table copied as select * from countries"),
        Plan::Broadcast { .. }
    ));
    // Undeclared relations read as reference tables: a view over sharded rows would show one
    // shard's; one over reference tables, or one declared sharded, is made everywhere.
    let mut text = String::from("[[users]]\nname=\"a\"\nauth=\"trust\"\n");
    for i in 0..3 {
        text.push_str(&format!(
            "[[shards]]\nname=\"s{i}\"\nurl=\"postgres://u@h/db\"\n"
        ));
    }
    text.push_str(
        "[routing]\nundeclared_tables=\"reference\"\n\
         [tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
         [tables.rich]\nshard_key=\"id\"\nkey_type=\"bigint\"\n",
    );
    let p = Config::from_toml(&text).unwrap().placement().unwrap();
    let planned = |sql: &str| {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        plan(&stmts[0], &p, &Params::default())
    };
    for sql in [
        "create view everyone as select * from accounts",
        "create materialized view everyone as select id from accounts",
    ] {
        assert_eq!(code(&planned(sql)), "0A000", "{sql}");
    }
    for sql in [
        "create view rich as select * from accounts where v > 100",
        "create view names as select * from countries",
    ] {
        assert!(matches!(planned(sql), Plan::Broadcast { .. }), "{sql}");
    }
}

#[test]
fn writes_by_a_system_column_over_several_shards_are_refused() {
    for sql in [
        "update accounts set v = 1 where ctid = '(0,1)'",
        "delete from accounts a where a.xmin = '5'",
        "update accounts set v = 1 where id in (1, 2, 3) and ctid = '(0,1)'",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    assert!(matches!(
        plan_sql("update accounts set v = 1 where id = 1 and ctid = '(0,1)'"),
        Plan::Shard { .. }
    ));
}

#[test]
fn update_from_and_delete_using_run_over_reference_tables_only() {
    // Each shard joins its own rows to its full copy of the reference table.
    assert_eq!(
        plan_sql(
            "update accounts a set v = c.rate from countries c where c.code = a.country and a.id = 42"
        ),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    assert_eq!(
        plan_sql("delete from accounts a using countries c where c.code = a.country and a.id = 42"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    assert!(matches!(
        plan_sql("update accounts a set v = 0 from (select code from countries) c where c.code = a.country"),
        Plan::Write { parts, sum: true, .. } if parts.len() == 3
    ));
    for sql in [
        // Another sharded table's rows are on other shards.
        "update accounts a set v = l.amount from ledger l where l.account_id = a.id",
        "delete from accounts a using users u where u.name = a.owner",
        "update accounts a set v = 1 from countries c, ledger l where l.account_id = a.id",
        // Copies could each pick another of several matching rows.
        "update countries c set name = d.name from countries d where d.code = c.code",
        "update countries c set name = a.owner from accounts a where a.country = c.code",
        "delete from countries c using accounts a where a.country = c.code",
    ] {
        let planned = plan_sql(sql);
        assert_eq!(code(&planned), "0A000", "{sql}");
    }
}

#[test]
fn a_write_under_with_is_refused_as_such() {
    for sql in [
        "with p as (select code from countries) update accounts set v = 1 where id = 3",
        "with p as (select 1) delete from accounts where id = 3",
        "with p as (select 1) insert into accounts (id) values (3)",
    ] {
        match plan_sql(sql) {
            Plan::Reject(e) => assert!(e.message.contains("WITH before"), "{sql}: {}", e.message),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn limits_near_bigints_end_and_null_limits_are_read_as_postgresql_reads_them() {
    let scatter = |sql: &str| match plan_sql(sql) {
        Plan::Scatter { sql, merge, .. } => (sql, merge.limit, merge.offset),
        other => panic!("{sql}: {other:?}"),
    };
    // The sum would pass a bigint's end: as good as no limit.
    let (sql, limit, offset) =
        scatter("select id from accounts order by id limit 9223372036854775807 offset 9");
    assert!(sql.ends_with("LIMIT 9223372036854775807"), "{sql}");
    assert_eq!((limit, offset), (Some(i64::MAX as u64), 9));
    // Beyond a bigint itself: the shards refuse it as one server would.
    let (sql, ..) =
        scatter("select id from accounts order by id limit 5 offset 9223372036854775808");
    assert!(sql.ends_with("LIMIT 9223372036854775808"), "{sql}");
    // NULL: no limit, no offset.
    let (sql, limit, offset) =
        scatter("select id from accounts order by id limit null offset null");
    assert!(!sql.to_lowercase().contains("limit"), "{sql}");
    assert_eq!((limit, offset), (None, 0));
    let (_, limit, offset) = scatter("select id from accounts order by id limit null offset 4");
    assert_eq!((limit, offset), (None, 4));
}

#[test]
fn aggregates_of_the_sharded_side_over_kept_reference_rows_combine() {
    for sql in [
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code group by c.code",
        "select c.code as k, count(a.id) as n, sum(a.v), min(a.owner), max(a.v), avg(a.v), count(distinct a.owner) \
         from countries c left outer join accounts a on a.country = c.code and a.v > 3 \
         where c.name like 'A%' group by c.code having count(a.id) > 1 order by n desc, k limit 3",
        "select count(a.id), bool_or(a.active) from countries c left join accounts a on a.country = c.code",
        "select countries.code from countries left join accounts on accounts.country = countries.code group by countries.code",
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code group by 1",
    ] {
        assert!(matches!(plan_sql(sql), Plan::Scatter { .. }), "{sql}: {:?}", plan_sql(sql));
    }
    for sql in [
        // An unmatched row counts, or is kept or dropped, or makes a group, on every shard.
        "select c.code, count(*) from countries c left join accounts a on a.country = c.code group by c.code",
        "select c.code, count(coalesce(a.v, 0)) from countries c left join accounts a on a.country = c.code group by c.code",
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code where a.v > 1 group by c.code",
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code where a.v is null group by c.code",
        "select a.owner, count(a.id) from countries c left join accounts a on a.country = c.code group by a.owner",
        "select c.code, sum(c.rate) from countries c left join accounts a on a.country = c.code group by c.code",
        "select c.code from countries c left join accounts a on a.country = c.code",
        // Unqualified: either side's.
        "select c.code, count(id) from countries c left join accounts a on a.country = c.code group by c.code",
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code group by code",
        "select c.code, count(a.id) over () from countries c left join accounts a on a.country = c.code",
        "select c.code, count(a.id) from countries c left join accounts a on a.country = c.code \
         where c.code in (select country from accounts) group by c.code",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn reference_columns_depending_on_a_grouped_key_are_carried() {
    for sql in [
        // Django's annotate(Count(...)) over a reference parent, grouped by its key alone.
        "SELECT \"countries\".\"code\", \"countries\".\"name\", COUNT(\"accounts\".\"id\") AS \"n\" \
         FROM \"countries\" LEFT OUTER JOIN \"accounts\" ON (\"countries\".\"code\" = \"accounts\".\"country\") \
         GROUP BY \"countries\".\"code\" ORDER BY \"countries\".\"code\" ASC",
        "select c.code, c.name, count(*) from accounts a join countries c on c.code = a.country group by c.code",
    ] {
        match plan_sql(sql) {
            Plan::Scatter { merge, .. } => {
                let spec = merge.aggregate.expect("an aggregate merge");
                assert_eq!(spec.columns[1], crate::router::aggregate::AggColumn::Carried, "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // A sharded table's column is not: the same key value can be other rows on other shards.
    assert_eq!(
        code(&plan_sql(
            "select l.id, l.amount, count(*) from ledger l group by l.id"
        )),
        "0A000"
    );
}

#[test]
fn constants_zero_defaults_and_filters_combine() {
    use crate::router::aggregate::AggColumn;
    let columns = |sql: &str| match plan_sql(sql) {
        Plan::Scatter { merge, .. } => merge.aggregate.expect("an aggregate merge").columns,
        other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(
        columns("select 'total' as label, 1, -2.5::numeric, $1, count(*) from accounts"),
        [
            AggColumn::Carried,
            AggColumn::Carried,
            AggColumn::Carried,
            AggColumn::Carried,
            AggColumn::Count
        ]
    );
    // Django's Sum(..., default=0): 0 adds nothing, so the coalesced partials add up.
    assert_eq!(
        columns(
            "select owner, coalesce(sum(v), 0), coalesce(count(v), 0) from accounts group by owner"
        ),
        [AggColumn::Group, AggColumn::Sum, AggColumn::Count]
    );
    assert_eq!(
        columns("select count(*) filter (where v > 1), min(v) filter (where v < 9) from accounts"),
        [AggColumn::Count, AggColumn::Min]
    );
    // avg's hidden count and float sum read the rows the avg reads.
    match plan_sql("select avg(v) filter (where v > 1) from accounts") {
        Plan::Scatter { sql, .. } => {
            assert_eq!(sql.matches("FILTER (WHERE v > 1)").count(), 3, "{sql}")
        }
        other => panic!("{other:?}"),
    }
    for sql in [
        // Another value per shard.
        "select now(), count(*) from accounts",
        "select v, count(*) from accounts",
        // Without rows the merge makes the answer row and has no constant to put in it.
        "select 1, count(distinct owner) from accounts",
        "select count(distinct owner) filter (where v > 1) from accounts",
        "select count(distinct owner), coalesce(sum(v), 0) from accounts",
        "select sum(v) over () from accounts",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn scalar_subqueries_tied_by_the_key_run_on_each_shard() {
    for sql in [
        "select a.id, (select count(*) from ledger l where l.account_id = a.id) as n from accounts a order by n desc, a.id",
        // Django's Subquery: the outer key in parentheses, the inner query grouped.
        "SELECT \"accounts\".\"id\", (SELECT COUNT(*) AS \"c\" FROM \"ledger\" U0 WHERE U0.\"account_id\" = (\"accounts\".\"id\") \
         GROUP BY U0.\"account_id\") AS \"n\" FROM \"accounts\"",
        "select a.id from accounts a where a.v < (select sum(l.amount) from ledger l where l.account_id = a.id)",
        "select a.id from accounts a where 7 not in (select l.amount from ledger l where l.account_id = a.id)",
        "select a.id, (select count(*) from countries) from accounts a",
    ] {
        match plan_sql(sql) {
            Plan::Scatter { merge, .. } => assert!(merge.aggregate.is_none(), "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(matches!(
        plan_sql("select a.v, (select count(*) from ledger l where l.account_id = a.id) from accounts a where a.id = 4"),
        Plan::Shard { shard, .. } if shard == shard_of(4)
    ));
    // Aggregates of the subquery's rows inside an aggregate of the outer ones combine.
    assert!(matches!(
        plan_sql("select a.owner, max((select count(*) from ledger l where l.account_id = a.id)) from accounts a group by a.owner"),
        Plan::Scatter { merge, .. } if merge.aggregate.is_some()
    ));
    for sql in [
        // Not tied by the key: each shard would count only its own rows.
        "select a.id, (select count(*) from ledger) from accounts a",
        "select a.id, (select count(*) from ledger l where l.account_id = 3) from accounts a",
        "select a.id, (select count(*) from ledger l where l.amount = a.v) from accounts a",
        "select a.id from accounts a where 7 not in (select l.account_id from ledger l)",
        // An aggregate of outer columns only is the outer query's: one row in all.
        "select (select max(a.v)) from accounts a",
        "select (select max(v)) from accounts a",
        // A text key is not co-located with a bigint one.
        "select a.id, (select count(*) from users u where u.name = a.id) from accounts a",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn exists_of_sharded_rows_asks_every_shard_and_ors_the_answers() {
    use crate::router::aggregate::AggColumn;
    match plan_sql(
        "select exists (select 1 from accounts where v > 3) as anon_1, not exists (select * from ledger l join accounts a on a.id = l.account_id)",
    ) {
        Plan::Scatter { shards, merge, .. } => {
            assert_eq!(shards, vec![0, 1, 2]);
            let spec = merge.aggregate.expect("combined");
            assert_eq!(spec.columns, [AggColumn::Max, AggColumn::Min]);
            assert!(spec.single_group);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan_sql("select exists (select 1 from accounts where id = 7 limit 1)"),
        Plan::Shard {
            shard: shard_of(7),
            write: false
        }
    );
    for sql in [
        // About rows no shard holds alone.
        "select exists (select 1 from accounts having count(*) > 5)",
        "select exists (select 1 from accounts offset 40)",
        "select exists (select distinct v from accounts)",
        "select exists (select 1 from accounts a join ledger l on l.amount = a.id)",
        // Not only EXISTS tests: another item would be one value per shard.
        "select exists (select 1 from accounts), (select count(*) from accounts)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn counts_of_distinct_values_collect_them_across_shards() {
    use crate::router::aggregate::AggColumn;
    // Django's values("x").distinct().count().
    match plan_sql("SELECT COUNT(*) FROM (SELECT DISTINCT \"accounts\".\"owner\" AS \"col1\" FROM \"accounts\" WHERE v > 2) subquery") {
        Plan::Scatter { sql, merge, .. } => {
            assert!(sql.contains("COUNT(DISTINCT \"accounts\".\"owner\")"), "{sql}");
            let spec = merge.aggregate.expect("combined");
            assert!(spec.single_group);
            assert!(spec.columns.contains(&AggColumn::DistinctValue { with_null: true }), "{spec:?}");
        }
        other => panic!("{other:?}"),
    }
    // One shard holds every row: it answers as written.
    assert!(matches!(
        plan_sql("select count(*) from (select distinct v from accounts where id = 3) s"),
        Plan::Shard { shard, .. } if shard == shard_of(3)
    ));
    // count(DISTINCT x) itself still skips NULLs.
    match plan_sql("select count(distinct owner) from accounts") {
        Plan::Scatter { merge, .. } => assert!(merge
            .aggregate
            .expect("combined")
            .columns
            .contains(&AggColumn::DistinctValue { with_null: false })),
        other => panic!("{other:?}"),
    }
    // Several columns: grouped by on each shard, the groups counted across shards.
    match plan_sql("select count(*) as n from (select distinct a.owner as c1, l.amount as c2 from accounts a join ledger l on l.account_id = a.id where a.v > 2) s") {
        Plan::Scatter { shards, sql, merge } => {
            assert_eq!(shards, vec![0, 1, 2]);
            assert!(sql.ends_with("GROUP BY a.owner, l.amount"), "{sql}");
            assert!(sql.starts_with("SELECT count(*) AS n, a.owner AS __shardgate_distinct_0"), "{sql}");
            assert_eq!(merge.hidden, 2);
            let spec = merge.aggregate.expect("combined");
            assert!(spec.count_groups);
            assert_eq!(spec.columns, [AggColumn::Count, AggColumn::Group, AggColumn::Group]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        plan_sql("select count(*) from (select distinct owner, v from accounts where id = 3) s"),
        Plan::Shard { shard, .. } if shard == shard_of(3)
    ));
    // With HAVING: merged as the grouped query, filtered, then counted.
    match plan_sql("select count(*) from (select owner, count(*) from accounts group by owner having count(*) > 1) s") {
        Plan::Scatter { merge, .. } => {
            let spec = merge.aggregate.expect("combined");
            assert!(spec.count_groups && !spec.having.is_empty());
            assert_eq!(merge.hidden, spec.columns.len() - 1);
        }
        other => panic!("{other:?}"),
    }
    // A grouped query counted: its GROUP BY, a position read as the item it names; its items
    // carried hidden and never evaluated.
    match plan_sql("select count(*) from (select owner as col1, sum(v) as total from accounts group by 1) subquery") {
        Plan::Scatter { sql, merge, .. } => {
            assert!(sql.ends_with("GROUP BY owner"), "{sql}");
            assert!(sql.contains("CASE WHEN false THEN sum(v) END"), "{sql}");
            assert_eq!(merge.hidden, 3);
            let spec = merge.aggregate.expect("combined");
            assert!(spec.count_groups);
            assert_eq!(
                spec.columns,
                [AggColumn::Count, AggColumn::Group, AggColumn::Carried, AggColumn::Carried]
            );
        }
        other => panic!("{other:?}"),
    }
    for sql in [
        "select count(*) from (select distinct owner, v from accounts limit 3) s",
        "select count(*) from (select distinct owner, v from accounts a join ledger l on l.amount = a.v) s",
        "select count(*) from (select distinct owner, count(*) from accounts) s",
        "select count(*) from (select owner, count(*) from accounts group by owner having string_agg(owner, ',') > 'a') s",
        "select count(*) from (select owner, count(*) from accounts group by 3) s",
        "select count(*) from (select * from accounts group by owner) s",
        "select count(*) from (select distinct owner from accounts limit 3) s",
        "select count(*) from (select distinct count(*) from accounts) s",
        "select count(*) from (select distinct l.amount from ledger l join accounts a on a.v = l.account_id) s",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn ctes_read_once_are_planned_as_the_derived_tables_they_stand_for() {
    assert!(matches!(
        plan_sql("with big as (select * from accounts where v > 2) select count(*) from big"),
        Plan::Scatter { merge, .. } if merge.aggregate.is_some()
    ));
    assert!(matches!(
        plan_sql("with a as (select id, v from accounts where id = 4), b (k) as (select id from a where v > 1) select * from b"),
        Plan::Shard { shard, .. } if shard == shard_of(4)
    ));
    // Named as the table it reads: the body's name is the table, the statement's the CTE.
    match plan_sql(
        "with accounts as (select * from accounts where id < 3) select count(*) from accounts",
    ) {
        Plan::Scatter { shards, sql, .. } => {
            assert_eq!(shards, vec![0, 1, 2]);
            assert!(!sql.contains("WITH"), "{sql}");
        }
        other => panic!("{other:?}"),
    }
    for sql in [
        "with a as (select * from accounts) select count(*) from a x join a y on x.id = y.id",
        "with recursive r (n) as (select 1 union all select n + 1 from r where n < 3) select * from r join accounts on accounts.id = r.n",
        "with d as (delete from accounts where id = 30 returning *) select count(*) from d",
        "with accounts as (select * from accounts) select count(*) from accounts x join accounts y on x.id = y.id",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    // A write's target is the table whatever a CTE is called: refused, never sent to one shard.
    assert_eq!(
        code(&plan_sql(
            "with accounts as (select 1) delete from accounts where v > 1000"
        )),
        "0A000"
    );
}

#[test]
fn updates_set_from_a_subquery_tied_by_the_key_run_on_each_shard() {
    for sql in [
        "update accounts a set v = (select sum(l.amount) from ledger l where l.account_id = a.id)",
        // Django: the outer key in parentheses.
        "UPDATE \"accounts\" SET \"v\" = (SELECT COUNT(*) FROM \"ledger\" U0 WHERE U0.\"account_id\" = (\"accounts\".\"id\")) WHERE \"accounts\".\"v\" > 1",
    ] {
        assert!(matches!(plan_sql(sql), Plan::Write { ref parts, .. } if parts.len() == 3), "{sql}: {:?}", plan_sql(sql));
    }
    for sql in [
        "update accounts a set v = (select sum(l.amount) from ledger l)",
        "update accounts a set v = (select sum(l.amount) from ledger l where l.account_id = 3)",
        "update accounts a set v = 1 returning (select count(*) from ledger l where l.account_id = a.id)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn fetch_first_is_planned_as_limit() {
    match plan_sql("select id from accounts order by id offset 5 rows fetch first 3 rows only") {
        Plan::Scatter { sql, merge, .. } => {
            assert_eq!((merge.limit, merge.offset), (Some(3), 5));
            assert!(sql.ends_with("LIMIT 8"), "{sql}");
        }
        other => panic!("{other:?}"),
    }
    match plan_sql(
        "select owner, count(*) from accounts group by owner order by 2 fetch first row only",
    ) {
        Plan::Scatter { merge, .. } => assert_eq!(merge.limit, Some(1)),
        other => panic!("{other:?}"),
    }
    match plan_sql("select id from accounts order by id offset 2 fetch next 4 rows only") {
        Plan::Scatter { merge, .. } => assert_eq!((merge.limit, merge.offset), (Some(4), 2)),
        other => panic!("{other:?}"),
    }
    for sql in [
        "select id from accounts order by v fetch first 3 rows with ties",
        "select id from accounts order by id limit 5 offset 3 fetch first 8 rows only",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn distinct_on_keeps_the_first_row_per_value_across_shards() {
    match plan_sql(
        "select distinct on (owner, v) owner, id from accounts order by v, owner, id desc limit 5",
    ) {
        Plan::Scatter { sql, merge, .. } => {
            assert_eq!(merge.distinct_on, 2);
            assert_eq!(merge.order.len(), 3);
            assert!(merge.aggregate.is_none());
            assert!(
                sql.contains("DISTINCT ON (owner, v)") && sql.ends_with("LIMIT 5"),
                "{sql}"
            );
        }
        other => panic!("{other:?}"),
    }
    for sql in [
        // Which row of a value each shard keeps would be its own choice.
        "select distinct on (owner) owner, id from accounts",
        "select distinct on (owner) owner, id from accounts order by id, owner",
        "select distinct on (owner) owner, count(*) from accounts group by owner, v order by owner",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn union_all_of_each_shards_rows_runs_on_every_shard() {
    match plan_sql(
        "select id, v from accounts where v > 1 union all select account_id, amount from ledger where id = 9 \
         union all select id, v from accounts where id = 4 order by 2 desc, id limit 3 offset 1",
    ) {
        Plan::Scatter { shards, sql, merge } => {
            assert_eq!(shards, vec![0, 1, 2]);
            assert_eq!(
                sort_columns(&merge),
                [SortColumn::Position(2), SortColumn::Name("id".into())]
            );
            assert_eq!((merge.limit, merge.offset), (Some(3), 1));
            assert!(sql.ends_with("LIMIT 4"), "{sql}");
        }
        other => panic!("{other:?}"),
    }
    // Both branches on the shard of 4.
    assert_eq!(
        plan_sql("select id from accounts where id = 4 union all select account_id from ledger where account_id = 4"),
        Plan::Shard {
            shard: shard_of(4),
            write: false
        }
    );
    for sql in [
        // Key-aligned branches aside (see below), equal rows may sit on different shards.
        "select v from accounts intersect select amount from ledger",
        "select v from accounts except select amount from ledger",
        // The inner UNION is a distinct set of its own under the UNION ALL.
        "select v from accounts union all (select amount from ledger union select v from accounts)",
        // Every shard would return the reference table's rows.
        "select id from accounts union all select 1 from countries",
        "select id from accounts union all select 7",
        // Merged by the proxy on its own.
        "select id from accounts union all select count(*) from ledger",
        "select id from accounts union all (select account_id from ledger order by 1 limit 2)",
        "select id from accounts union all select account_id from ledger order by id + 1",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    // As PostgreSQL answers it, never a position the merge would read before the first.
    assert_eq!(
        code(&plan_sql(
            "select id from accounts union all select account_id from ledger order by 0"
        )),
        "42P10"
    );
}

#[test]
fn union_keeps_one_of_each_row_across_shards() {
    use crate::router::aggregate::AggColumn;
    let sql = "select id, v from accounts where v > 1 union select account_id, amount from ledger \
               union all select 7, 'x' from countries union select distinct id, v from accounts \
               order by v desc, 1 limit 3 offset 1";
    match plan_sql(sql) {
        Plan::Scatter { shards, sql, merge } => {
            assert_eq!(shards, vec![0, 1, 2]);
            let spec = merge.aggregate.clone().expect("a distinct merge");
            assert_eq!(spec.columns, vec![AggColumn::Group; 2]);
            assert!(!spec.single_group);
            assert_eq!(
                sort_columns(&merge),
                [SortColumn::Name("v".into()), SortColumn::Position(1)]
            );
            // Sorted and cut only after the merge: no shard's first rows are enough.
            assert_eq!((merge.limit, merge.offset), (Some(3), 1));
            assert!(!sql.contains("LIMIT") && !sql.contains("ORDER BY"), "{sql}");
        }
        other => panic!("{other:?}"),
    }
    let bound = Params {
        values: [Some(bytes::Bytes::from_static(b"2"))]
            .into_iter()
            .collect(),
        formats: vec![],
        types: Default::default(),
    };
    let stmt = Parser::parse_sql(
        &PostgreSqlDialect {},
        "select id from accounts union select 7 order by 1 limit $1",
    )
    .unwrap();
    match plan(&stmt[0], &placement(), &bound) {
        Plan::Scatter { sql, merge, .. } => {
            assert_eq!(merge.limit, Some(2));
            assert!(!sql.contains('$'), "{sql}");
            assert_eq!(merge.picks, Some(vec![]));
        }
        other => panic!("{other:?}"),
    }
    for sql in [
        // Each shard would answer these its own way.
        "select id from accounts union select oid::int8 from pg_class",
        "select id from accounts union select 'accounts'::regclass::oid::int8",
        "select id::text from accounts union select now()::text",
        "select id from accounts union select pg_backend_pid()",
        "select id from accounts union select my_function(1)",
        // The merge needs the number of columns.
        "select * from accounts union select id, v from accounts",
        // Its own aggregate or LIMIT, merged apart from the union's rows.
        "select id from accounts union select count(*) from ledger",
        "select id from accounts union (select account_id from ledger order by 1 limit 2)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn items_over_aggregates_are_computed_after_the_merge() {
    use crate::router::aggregate::AggColumn;
    match plan_sql(
        "select owner, round(avg(v), 2) as r, count(*)::int, owner || ':' || count(*) \
         from accounts group by owner order by r desc, 3",
    ) {
        Plan::Scatter { sql, merge, .. } => {
            assert!(
                sql.starts_with(
                    "SELECT owner, CASE WHEN false THEN round(avg(v), 2) END AS r, \
                 CASE WHEN false THEN count(*)::INT END AS \"count\", \
                 CASE WHEN false THEN owner || ':' || count(*) END AS \"?column?\", \
                 sum(v) AS __shardgate_part_0, count(*) AS __shardgate_part_1, \
                 owner AS __shardgate_part_2, count(*) AS __shardgate_part_3"
                ),
                "{sql}"
            );
            let spec = merge.aggregate.clone().expect("combined");
            assert_eq!(
                spec.columns[1..4],
                [
                    AggColumn::Computed {
                        template: "round(__shardgate_c4, 2)".into(),
                        parts: vec![4],
                        params: vec![]
                    },
                    AggColumn::Computed {
                        template: "__shardgate_c5::INT".into(),
                        parts: vec![5],
                        params: vec![]
                    },
                    AggColumn::Computed {
                        template: "__shardgate_c6 || ':' || __shardgate_c7".into(),
                        parts: vec![6, 7],
                        params: vec![]
                    },
                ]
            );
            assert!(matches!(spec.columns[4], AggColumn::Avg { .. }), "{spec:?}");
            // The parts and avg's count travel hidden; ORDER BY reads the computed items.
            assert_eq!(merge.hidden, spec.columns.len() - 4);
            assert_eq!(
                sort_columns(&merge),
                [SortColumn::Position(2), SortColumn::Position(3)]
            );
        }
        other => panic!("{other:?}"),
    }
    // Defaults and arithmetic the shards' partials could not carry are applied to the totals.
    for sql in [
        "select coalesce(sum(v), 1) from accounts",
        "select coalesce(max(v), 0), coalesce(avg(v), 0) from accounts",
        "select coalesce(sum(v), 0) + 1 from accounts",
        "select sum(x) / count(*), max(v) - min(v) from accounts",
        "select c.code, sum(a.v) + 1 from countries c left join accounts a on a.country = c.code group by c.code",
    ] {
        match plan_sql(sql) {
            Plan::Scatter { merge, .. } => assert!(
                merge.aggregate.expect("combined").columns.iter().any(|c| matches!(c, AggColumn::Computed { .. })),
                "{sql}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        // Not one value per group, or not what the group's own server would compute.
        "select v, count(*) + x from accounts group by v",
        "select count(*) + (select count(*) from countries) from accounts",
        "select round(avg(v), $1) from accounts",
        "select my_function(count(*)) from accounts",
        "select count(*) + extract(epoch from now()) from accounts",
        "select distinct count(*) + 1 from accounts group by owner",
        "select c.code, count(*) + 1 from countries c left join accounts a on a.country = c.code group by c.code",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn windows_partitioned_by_the_shard_key_run_on_every_shard_as_plain_rows() {
    for sql in [
        "select account_id, amount, row_number() over (partition by account_id order by amount) from ledger",
        "select l.account_id, rank() over (partition by l.account_id, l.amount order by l.amount) \
         from ledger l join accounts a on a.id = l.account_id order by 1, 2 limit 5",
        "select account_id from ledger order by row_number() over (partition by account_id order by amount), 1 limit 3",
        // Top rows per key through a derived table.
        "select * from (select account_id, amount, row_number() over (partition by account_id order by amount desc) rn \
         from ledger) s where rn <= 2 order by account_id, amount",
    ] {
        match plan_sql(sql) {
            Plan::Scatter { merge, .. } => assert!(merge.aggregate.is_none(), "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        "select id, row_number() over (order by id) from accounts",
        "select id, row_number() over (partition by v) from accounts",
        "select id, row_number() over w from accounts window w as (partition by id)",
        "select owner, rank() over (partition by owner order by count(*)) from accounts group by owner",
        "select distinct id, row_number() over (partition by id) from accounts",
        "select id, count(*) over (partition by id), count(*) from accounts",
        // The second table's key is NULL for the rows a LEFT JOIN adds.
        "select a.id, row_number() over (partition by l.account_id) from accounts a left join ledger l on l.account_id = a.id",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}

#[test]
fn set_operations_of_rows_carrying_the_shard_key_run_on_every_shard() {
    for sql in [
        "select id, v from accounts where v > 1 except select id, v from accounts where v > 5 order by 1",
        "select a.id, a.owner from accounts a intersect select l.account_id, 'x' from ledger l limit 3",
        "select id from accounts union all (select account_id from ledger union select id from accounts)",
        "select v, id from accounts except all select amount, account_id from ledger where amount > 2",
        // Grouped by the key, each shard's groups are whole.
        "select id from accounts except select account_id from ledger group by account_id having count(*) > 1 order by 1 limit 2",
    ] {
        match plan_sql(sql) {
            Plan::Scatter { shards, merge, .. } => {
                assert_eq!(shards, vec![0, 1, 2], "{sql}");
                assert!(merge.aggregate.is_none(), "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        // The keys at different positions, of different types, behind a `*`, or NULL from a
        // LEFT JOIN's right side.
        "select id, v from accounts except select v, id from accounts",
        "select id from accounts intersect select name from users",
        "select * from accounts except select * from accounts where v > 1",
        "select l.account_id from accounts a left join ledger l on l.account_id = a.id intersect select id from accounts",
        // A branch merged across shards on its own.
        "select id from accounts except (select account_id from ledger order by 1 limit 2)",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
}
