//! Statements about the session and the transaction: shardgate settings, savepoints, DDL,
//! SET, sequence functions and signals.

use super::*;

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
fn unique_indexes_built_concurrently_must_name_the_shard_key() {
    let outside = Plan::Broadcast {
        transactional: false,
    };
    assert_eq!(
        code(&plan_sql(
            "create unique index concurrently on accounts (lower(email))"
        )),
        "0A000"
    );
    assert_eq!(
        plan_sql("create unique index concurrently on accounts (ID, email)"),
        outside
    );
    assert_eq!(
        plan_sql("create index concurrently on accounts (email)"),
        outside
    );
    assert_eq!(
        plan_sql("create unique index concurrently on countries (name)"),
        outside
    );
    // In a transaction, the shards' catalogs judge it once it is made.
    assert_eq!(
        plan_sql("create unique index on accounts (email)"),
        Plan::Broadcast {
            transactional: true
        }
    );
}
