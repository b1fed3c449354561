//! Writes over several shards: split per shard, and refused where a shard would need another
//! shard's rows.

use super::*;

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
fn update_from_and_delete_using_run_over_reference_and_colocated_tables() {
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
    // A sharded table joined by the key: its rows a written row meets are on its shard.
    assert_eq!(
        plan_sql("update accounts a set v = l.amount from ledger l where l.account_id = a.id and a.id = 42"),
        Plan::Shard {
            shard: shard_of(42),
            write: true
        }
    );
    for sql in [
        "update accounts a set v = l.amount from ledger l where l.account_id = a.id",
        "update accounts a set v = 1 from countries c, ledger l where l.account_id = a.id and c.code = a.country",
        "delete from ledger using accounts a join countries c on c.code = a.country where a.id = ledger.account_id",
    ] {
        assert!(
            matches!(plan_sql(sql), Plan::Write { parts, sum: true, .. } if parts.len() == 3),
            "{sql}"
        );
    }
    for sql in [
        // Another sharded table's rows are on other shards.
        "delete from accounts a using users u where u.name = a.owner",
        "update accounts a set v = 1 from ledger l where l.amount = a.id",
        "update accounts a set v = 1 from ledger l where l.account_id = a.id or a.id = 3",
        // The key of another type: not co-located.
        "update accounts a set v = 1 from users u where u.name = a.id::text",
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
fn writes_naming_the_key_run_guarded_where_their_rows_are() {
    let guarded = "UPDATE accounts SET id = shardgate.unchanged_key(5, accounts.id, 'id of accounts'), v = 1 WHERE id = 5";
    assert_eq!(
        plan_sql("update accounts set id = 5, v = 1 where id = 5"),
        Plan::Write {
            parts: vec![(shard_of(5), guarded.to_string())],
            sum: true,
            picks: Vec::new(),
            serialize: None,
            row_order: Vec::new(),
        }
    );
    assert!(
        matches!(plan_sql("update accounts set id = 5, v = 1"), Plan::Write { ref parts, .. }
            if parts.len() == 3 && parts.iter().all(|(_, t)| t.contains("shardgate.unchanged_key"))),
    );
    // EXPLAIN plans it where it would run; EXPLAIN ANALYZE would run the text unguarded.
    assert_eq!(
        plan_sql("explain update accounts set id = 5 where id = 5"),
        Plan::Shard {
            shard: shard_of(5),
            write: false
        }
    );
    assert_eq!(
        code(&plan_sql(
            "explain analyze update accounts set id = 5 where id = 5"
        )),
        "0A000"
    );
}

#[test]
fn a_query_writing_a_reference_table_runs_on_every_copy() {
    for sql in [
        "with w as (select 'x' as c) insert into countries (code) select c from w",
        "with w as (insert into countries (code) values ('x') returning code) select * from w",
        "with w as (select 1) delete from countries where code = 'x'",
    ] {
        match plan_sql(sql) {
            Plan::Write {
                parts,
                sum: false,
                serialize: Some(table),
                ..
            } => {
                assert_eq!(parts.len(), 3, "{sql}");
                assert_eq!(table, "countries", "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // With a sharded table, or a value each copy computes its own way: refused.
    for sql in [
        "with w as (select id from accounts) insert into countries (code) select 'x' from w",
        "with w as (insert into countries (code) values ('x') returning code) select * from w, accounts where id = 1",
        "with w as (insert into countries (code) values (random()::text) returning code) select * from w",
    ] {
        assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
    }
    // EXPLAIN ANALYZE runs it as the write itself would.
    assert!(matches!(
        plan_sql("explain analyze with w as (select 'x' as c) insert into countries (code) select c from w"),
        Plan::Write { ref parts, serialize: Some(ref t), .. } if parts.len() == 3 && t == "countries"
    ));
    // A plain WITH reads one copy, as before.
    assert_eq!(
        plan_sql("with w as (select * from countries) select * from w"),
        Plan::Shard {
            shard: HOME,
            write: false
        }
    );
}
