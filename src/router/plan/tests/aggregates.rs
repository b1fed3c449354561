//! Aggregates over several shards: what each shard computes, what the merge combines, and what
//! is refused.

use super::*;
use crate::router::aggregate::AggColumn;

#[test]
fn aggregates_rewrite_avg_and_push_nothing_down() {
    let Plan::Scatter { sql, merge, .. } = plan_sql(
        "select v, avg(x) from accounts group by v having count(*) > 2 order by 2 desc limit 3",
    ) else {
        panic!()
    };
    assert_eq!(sql, "SELECT v, sum(x) AS avg, count(x) AS __shardgate_count_1, sum((x) * 1::FLOAT8) AS __shardgate_fsum_1, CASE WHEN false THEN count(*) > 2 END AS __shardgate_extra_2, count(*) AS __shardgate_extra_3 FROM accounts GROUP BY v");
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
            Computed {
                template: "__shardgate_c5 > 2".into(),
                parts: vec![5],
                params: vec![]
            },
            Count
        ]
    );
    assert_eq!(spec.having, Some(4));
    assert_eq!((merge.limit, merge.hidden), (Some(3), 4));
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
    // Other DISTINCT aggregates gather their values (`router::gathered`).
    for sql in [
        "select sum(distinct v) from accounts",
        "select sum(distinct v) filter (where x > 1) from accounts",
        "select v from accounts group by v having sum(distinct x) > 1",
        "select v from accounts group by v order by string_agg(owner, ',' order by x)",
        "select v from accounts group by v having sum(x) > min(y)",
    ] {
        let Plan::Scatter { merge, .. } = plan_sql(sql) else {
            panic!("{sql}")
        };
        assert!(merge.aggregate.unwrap().computes(), "{sql}");
    }
    // Gathered in no order of the evaluation's own, from a derived table.
    let sql = "select v from (select * from accounts order by x) s group by v having json_agg(owner)::text > ''";
    assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
}

#[test]
fn variance_is_evaluated_over_merged_sums_under_its_own_name_and_type() {
    let Plan::Scatter { sql, merge, .. } = plan_sql(
        "select v, stddev(x) filter (where y > 0), round(var_pop(x), 2) as r from accounts group by v",
    ) else {
        panic!()
    };
    // The shards describe each item as written (its type: numeric, or double precision for a
    // float argument) and return the three sums after the client's items.
    assert_eq!(
        sql,
        "SELECT v, CASE WHEN false THEN stddev(x) FILTER (WHERE y > 0) END AS \"stddev\", \
         CASE WHEN false THEN round(var_pop(x), 2) END AS r, \
         count(x) FILTER (WHERE y > 0) AS __shardgate_part_0, \
         sum((x)::NUMERIC) FILTER (WHERE y > 0) AS __shardgate_part_1, \
         sum((x)::NUMERIC * (x)::NUMERIC) FILTER (WHERE y > 0) AS __shardgate_part_2, \
         count(x) AS __shardgate_part_3, sum((x)::NUMERIC) AS __shardgate_part_4, \
         sum((x)::NUMERIC * (x)::NUMERIC) AS __shardgate_part_5 FROM accounts GROUP BY v"
    );
    use crate::router::aggregate::AggColumn::*;
    let columns = merge.aggregate.unwrap().columns;
    let Computed {
        template, parts, ..
    } = &columns[1]
    else {
        panic!("{columns:?}")
    };
    assert_eq!(
        template,
        "shardgate.variance_of(__shardgate_c3, __shardgate_c4, __shardgate_c5, true, true)"
    );
    assert_eq!(parts, &[3, 4, 5]);
    assert_eq!(&columns[3..], &[Count, Sum, Sum, Count, Sum, Sum]);
}

#[test]
fn string_agg_joins_with_its_separator_given_or_bound() {
    use crate::router::aggregate::AggColumn::*;
    use crate::router::aggregate::Concatenation::*;
    let Plan::Scatter { sql, merge, .. } =
        plan_sql("select v, string_agg(owner, ' | ') from accounts group by v")
    else {
        panic!()
    };
    assert_eq!(
        sql,
        "SELECT v, string_agg(owner, ' | ') FROM accounts GROUP BY v"
    );
    assert_eq!(
        merge.aggregate.unwrap().columns,
        [
            Group,
            Joined(Strings {
                separator: b" | ".to_vec()
            })
        ]
    );
    let stmts = Parser::parse_sql(
        &PostgreSqlDialect {},
        "select string_agg(owner, $1) filter (where x > 0) from accounts",
    )
    .unwrap();
    let bound = Params {
        values: [Some(bytes::Bytes::from_static(b";"))]
            .into_iter()
            .collect(),
        formats: vec![],
        types: Default::default(),
    };
    let Plan::Scatter { merge, .. } = plan(&stmts[0], &placement(), &bound) else {
        panic!()
    };
    assert_eq!(
        merge.aggregate.unwrap().columns,
        [Joined(Strings {
            separator: b";".to_vec()
        })]
    );
    let Plan::Scatter { merge, .. } =
        plan_sql("select v, array_agg(x), jsonb_agg(owner) from accounts group by v")
    else {
        panic!()
    };
    assert_eq!(
        merge.aggregate.unwrap().columns,
        [Group, Joined(Arrays), Joined(JsonbArrays)]
    );
    // Ordered, DISTINCT and json_agg calls: the values gathered, the call evaluated once
    // (`router::gathered`), over a derived table too when the call orders them.
    let Plan::Scatter { merge, .. } = plan_sql(
        "select string_agg(o, ',' order by v desc) from (select owner o, v from accounts) s",
    ) else {
        panic!()
    };
    let columns = merge.aggregate.unwrap().columns;
    let [Computed {
        template, parts, ..
    }, Joined(Arrays), Joined(Arrays)] = columns.as_slice()
    else {
        panic!("{columns:?}")
    };
    assert_eq!(parts, &[1, 2]);
    assert!(
        template
            .starts_with("(SELECT string_agg(__shardgate_e0, ',' ORDER BY __shardgate_e1 DESC)"),
        "{template}"
    );
    for sql in [
        "select array_agg(x order by v) from accounts",
        "select jsonb_agg(distinct x) from accounts",
        "select json_agg(x) from accounts",
        "select string_agg(distinct owner, ',') from accounts",
    ] {
        let Plan::Scatter { merge, .. } = plan_sql(sql) else {
            panic!("{sql}")
        };
        assert!(merge.aggregate.unwrap().computes(), "{sql}");
    }
    for (sql, why) in [
        ("select string_agg(owner, v) from accounts", "separator"),
        (
            "select string_agg(owner, v order by v) from accounts",
            "every row must share it",
        ),
        (
            "select json_agg(o) from (select owner o from accounts order by v) s",
            "",
        ),
        (
            "select string_agg(o, ',') from (select owner o from accounts order by v) s",
            "",
        ),
        (
            "select string_agg(a.owner, ',') from accounts a, generate_series(1, 2) g",
            "function",
        ),
    ] {
        let Plan::Reject(e) = plan_sql(sql) else {
            panic!("{sql}: expected a refusal")
        };
        assert_eq!(e.code, "0A000", "{sql}");
        assert!(e.message.contains(why), "{sql}: {}", e.message);
    }
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
        "select any_value(v) from accounts",
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
    // A literal beside count(DISTINCT) without GROUP BY is evaluated after the merge, which
    // makes the answer row from no shard's row; the clock's calls are not literals.
    match plan_sql("select 1, count(distinct owner) from accounts") {
        Plan::Scatter { merge, .. } => {
            let spec = merge.aggregate.expect("combined");
            assert!(
                matches!(&spec.columns[0], AggColumn::Computed { template, parts, .. } if template == "1" && parts.is_empty()),
                "{spec:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    match plan_sql("select now(), count(distinct owner) from accounts") {
        Plan::Reject(e) => assert!(!e.message.contains("GROUP BY clause"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    for sql in [
        // Another value per shard.
        "select now(), count(*) from accounts",
        "select v, count(*) from accounts",
        // Without rows the merge makes the answer row and has no default to put in it.
        "select count(distinct owner), coalesce(sum(v), 0) from accounts",
        "select avg(v) over () from accounts",
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
            // The one table's column, written bare for the merge.
            assert!(sql.contains("COUNT(DISTINCT \"owner\")"), "{sql}");
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
            assert!(spec.count_groups && spec.having.is_some());
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
        "select count(*) from (select owner, count(*) from accounts group by owner having any_value(owner) > 'a') s",
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
fn aggregates_the_merge_cannot_combine_are_named_as_such() {
    let message = |sql: &str| match plan_sql(sql) {
        Plan::Reject(e) => (e.code, e.message.clone()),
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    };
    for (sql, named) in [
        (
            "select any_value(x) from accounts",
            "any_value(x) over several shards",
        ),
        (
            "select v from accounts group by v having any_value(owner) = 'a'",
            "any_value(owner) over several shards",
        ),
        (
            "select count(*), any_value(v) from accounts",
            "any_value(v) over",
        ),
        // Inside an item computed over merged aggregates.
        (
            "select count(*) + any_value(x) from accounts",
            "any_value(x) over",
        ),
        (
            "select v, count(distinct x) from accounts group by rollup(v)",
            "count(DISTINCT ...) with grouping sets",
        ),
    ] {
        let (code, text) = message(sql);
        assert_eq!(code, "0A000", "{sql}");
        assert!(text.contains(named), "{sql}: {text}");
        assert!(
            !text.contains("must appear in the GROUP BY"),
            "{sql}: {text}"
        );
    }
}

#[test]
fn grouping_sets_are_grouped_on_each_shard_and_told_apart_by_grouping() {
    let Plan::Scatter { sql, merge, .. } =
        plan_sql("select v, grouping(v), count(*) from accounts group by rollup(v, x)")
    else {
        panic!()
    };
    assert_eq!(
        sql,
        "SELECT v, grouping(v), count(*), x AS __shardgate_group_0, GROUPING(v, x) AS __shardgate_grouping FROM accounts GROUP BY ROLLUP (v, x)"
    );
    use crate::router::aggregate::AggColumn::*;
    let spec = merge.aggregate.unwrap();
    assert_eq!(spec.columns, vec![Group, Group, Count, Group, Group]);
    assert!(!spec.single_group);
    assert_eq!(merge.hidden, 2);
}

#[test]
fn an_empty_grouping_set_groups_by_nothing() {
    let planned = |sql: &str| {
        let Plan::Scatter { sql, merge, .. } = plan_sql(sql) else {
            panic!("{sql}")
        };
        (sql, merge.aggregate.unwrap())
    };
    let (sql, spec) = planned("select count(*) from accounts group by ()");
    assert_eq!(sql, "SELECT count(*) FROM accounts GROUP BY ()");
    assert!(spec.single_group);
    let (sql, spec) = planned("select v, count(*) from accounts group by (), v");
    assert_eq!(sql, "SELECT v, count(*) FROM accounts GROUP BY (), v");
    assert!(!spec.single_group);
}

#[test]
fn having_is_one_condition_computed_after_the_merge() {
    let bound = Params {
        values: [Some(bytes::Bytes::from_static(b"10.55"))]
            .into_iter()
            .collect(),
        formats: vec![],
        types: Default::default(),
    };
    let planned = |sql: &str| {
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        match plan(&stmt[0], &placement(), &bound) {
            Plan::Scatter { sql, merge, .. } => (sql, merge.aggregate.expect("combined")),
            other => panic!("{other:?}"),
        }
    };
    // The whole condition, its bound value and typmod left for PostgreSQL to read.
    let (sql, spec) = planned(
        "select v, count(*) from accounts group by v \
         having sum(x) > $1::NUMERIC(10, 1) or v in ('a', 'b')",
    );
    assert!(!sql.contains("HAVING"), "{sql}");
    let Some(AggColumn::Computed {
        template, params, ..
    }) = spec.having.map(|c| &spec.columns[c])
    else {
        panic!("{spec:?}")
    };
    assert_eq!(params, &[1]);
    assert!(template.contains("> $1::NUMERIC(10,1) OR"), "{template}");
    assert!(template.contains("IN ('a', 'b')"), "{template}");
    // A boolean aggregate alone is its own column, with nothing to evaluate.
    let (_, spec) = planned("select v from accounts group by v having bool_or(x > 1)");
    let column = spec.having.expect("a HAVING column");
    assert!(!matches!(spec.columns[column], AggColumn::Computed { .. }));
    // A bare constant would read as a position in the select list.
    let stmt = Parser::parse_sql(
        &PostgreSqlDialect {},
        "select v from accounts group by v having 1",
    )
    .unwrap();
    assert_eq!(
        code(&plan(&stmt[0], &placement(), &Params::default())),
        "0A000"
    );
}
