//! Which shards a statement goes to: point reads and writes, IN lists, scatters with pushed-down
//! limits, co-located joins, and keys PostgreSQL would not read as integers.

use super::*;

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
