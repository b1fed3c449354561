use super::*;

use crate::router::plan::tests::query;

fn placement() -> Placement {
    let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
         [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
         [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
         [tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
         [tables.orders]\nshard_key=\"account_id\"\nkey_type=\"bigint\"\n";
    crate::config::Config::from_toml(text)
        .unwrap()
        .placement()
        .unwrap()
}

#[test]
fn only_subqueries_referring_to_their_own_tables_are_run_alone() {
    assert!(self_contained(&query(
        "select max(o2.amount) from orders o2 where o2.amount > 0"
    )));
    assert!(self_contained(&query(
        "select id from accounts order by balance limit 7"
    )));
    assert!(!self_contained(&query(
        "select count(*) from orders o2 where o2.account_id = a.id"
    )));
    // A name hidden by its alias is the outer one.
    assert!(self_contained(&query(
        "select 1 from orders where orders.amount > 3"
    )));
    assert!(self_contained(&query(
        "with t as (select 1 as x) select t.x from t"
    )));
}

#[test]
fn untied_subqueries_are_found_outermost_first_and_tied_ones_are_left() {
    let p = placement();
    let q = query(
        "select (select max(amount) from orders), a.id from accounts a \
         where a.id in (select account_id from orders) \
         and a.balance > (select avg(balance) from accounts where id in (select account_id from orders)) \
         and exists (select 1 from orders o where o.account_id = a.id)",
    );
    let found: Vec<String> = candidates(&q, &p)
        .iter()
        .map(|c| c.site.to_string())
        .collect();
    assert_eq!(
        found,
        vec![
            "(SELECT max(amount) FROM orders)".to_string(),
            "(SELECT avg(balance) FROM accounts WHERE id IN (SELECT account_id FROM orders))"
                .to_string(),
        ]
    );
}

#[test]
fn a_subquery_reading_a_cte_of_the_statement_is_left_in_place() {
    let q = query(
        "with accounts as (select 1 as balance) select id from orders \
         where amount > (select max(balance) from accounts) \
         and amount < (select max(amount) from orders)",
    );
    let found: Vec<String> = candidates(&q, &placement())
        .iter()
        .map(|c| c.site.to_string())
        .collect();
    assert_eq!(found, vec!["(SELECT max(amount) FROM orders)".to_string()]);
}

#[test]
fn a_correlated_exists_is_read_in_parts_only_where_its_text_stands_once() {
    let p = crate::router::plan::tests::placement();
    let exists = "exists (select 1 from accounts a where a.country = c.code)";
    let once = query(&format!("select c.code from countries c where {exists}"));
    let found = candidates(&once, &p);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, Kind::SemiJoin { negated: false });
    // The same text over a table of another kind: one answer would be put in both places.
    let twice = query(&format!(
        "select c.code from countries c where {exists} union select c.name from accounts c where {exists}"
    ));
    assert!(candidates(&twice, &p).is_empty());
}

#[test]
fn an_exists_is_asked_for_one_row() {
    let q = query("select 1 from accounts where exists (select 1 from orders)");
    let c = candidates(&q, &placement());
    assert_eq!(c[0].query.to_string(), "SELECT 1 FROM orders LIMIT 1");
}

fn answer(oid: u32, typmod: i32, rows: &[Option<&str>]) -> Answer {
    Answer {
        columns: vec![("max".into(), oid, typmod)],
        rows: rows.iter().map(|v| vec![v.map(str::to_string)]).collect(),
        ..Answer::default()
    }
}

fn replaced(sql: &str, a: &Answer) -> String {
    let mut q = query(sql);
    let c = candidates(&q, &placement());
    let found: Vec<_> = c
        .iter()
        .map(|c| (c.site.clone(), replacement(c, a).unwrap(), item_name(c, a)))
        .collect();
    replace(&mut q, &found);
    q.to_string()
}

#[test]
fn a_scalar_becomes_a_typed_literal_named_as_postgres_names_it() {
    let numeric = 1700;
    let typmod = ((12 << 16) | 2) + 4;
    assert_eq!(
        replaced(
            "select (select max(amount) from orders), id from accounts",
            &answer(numeric, typmod, &[Some("12.50")])
        ),
        "SELECT CAST('12.50' AS pg_catalog.numeric(12, 2)) AS \"max\", id FROM accounts"
    );
    assert_eq!(
        replaced(
            "select id from accounts where balance > (select max(amount) from orders)",
            &answer(numeric, -1, &[])
        ),
        "SELECT id FROM accounts WHERE balance > CAST(NULL AS pg_catalog.numeric)"
    );
    assert!(replaced(
        "select id from accounts where owner = (select owner from orders)",
        &answer(25, -1, &[Some("a"), Some("it's")])
    )
    .contains("(SELECT v FROM (VALUES (CAST('a' AS pg_catalog.text)), (CAST('it''s' AS pg_catalog.text))) AS shardgate_rows (v))"));
}

#[test]
fn in_and_not_in_compare_with_an_array_of_the_values() {
    let a = answer(25, -1, &[Some("x\"y"), None, Some("a\\b")]);
    assert_eq!(
        replaced(
            "select id from accounts where owner not in (select owner from orders)",
            &a
        ),
        "SELECT id FROM accounts WHERE NOT (owner = ANY(CAST(E'{\"x\\\\\"y\",NULL,\"a\\\\\\\\b\"}' AS pg_catalog.text[])))"
    );
    assert_eq!(
        replaced(
            "select id from accounts where balance > all (select amount from orders)",
            &answer(23, -1, &[])
        ),
        "SELECT id FROM accounts WHERE balance > ALL(CAST('{}' AS INTEGER[]))"
    );
}

#[test]
fn an_integer_answer_is_a_key_the_planner_routes_by() {
    let q = replaced(
        "select * from accounts where id = (select max(account_id) from orders)",
        &answer(20, -1, &[Some("7")]),
    );
    assert_eq!(q, "SELECT * FROM accounts WHERE id = CAST('7' AS BIGINT)");
    let stmt = Parser::parse_sql(&PostgreSqlDialect {}, &q)
        .unwrap()
        .remove(0);
    let planned = super::super::plan::plan(
        &stmt,
        &placement(),
        &crate::router::params::Params::default(),
    );
    assert!(
        matches!(planned, super::super::plan::Plan::Shard { .. }),
        "{planned:?}"
    );
}

#[test]
fn exists_becomes_true_or_false() {
    assert_eq!(
        replaced(
            "select exists (select 1 from orders), not exists (select 1 from orders) from accounts",
            &answer(23, -1, &[Some("1")])
        ),
        "SELECT true AS \"exists\", false AS \"?column?\" FROM accounts"
    );
}

#[test]
fn what_cannot_be_written_back_is_refused() {
    let q = query("select id from accounts where balance in (select amount from orders)");
    let c = &candidates(&q, &placement())[0];
    assert_eq!(
        replacement(c, &answer(16390, -1, &[])).unwrap_err().code,
        "0A000"
    );
    let q = query("select id from accounts where balance = any (select amount from orders)");
    let c = &candidates(&q, &placement())[0];
    assert_eq!(
        replacement(c, &answer(1007, -1, &[])).unwrap_err().code,
        "0A000"
    );
}

#[test]
fn rows_of_several_columns_are_compared_as_rows() {
    let two = Answer {
        columns: vec![("a".into(), 23, -1), ("a".into(), 25, -1)],
        rows: vec![
            vec![Some("1".into()), Some("x".into())],
            vec![None, Some("it's".into())],
        ],
        collations: vec![(1, "\"C\"".into())],
        ..Answer::default()
    };
    assert_eq!(
        replaced(
            "select id from accounts where (id, m) not in (select account_id, note from orders)",
            &two
        ),
        "SELECT id FROM accounts WHERE (id, m) NOT IN (SELECT * FROM (VALUES (CAST('1' AS INTEGER), CAST('x' AS pg_catalog.text) COLLATE \"C\"), (CAST(NULL AS INTEGER), CAST('it''s' AS pg_catalog.text) COLLATE \"C\")) AS shardgate_rows (c1, c2))"
    );
    let none = Answer {
        rows: Vec::new(),
        ..two
    };
    assert_eq!(
        replaced(
            "select id from accounts where (id, m) in (select account_id, note from orders)",
            &none
        ),
        "SELECT id FROM accounts WHERE (id, m) IN (SELECT * FROM (SELECT CAST(NULL AS INTEGER), CAST(NULL AS pg_catalog.text) COLLATE \"C\" WHERE false) AS shardgate_rows (c1, c2))"
    );
}

#[test]
fn a_type_created_in_the_database_is_written_by_the_name_it_was_given() {
    let mut mood = answer(16390, -1, &[Some("ok")]);
    mood.named_types = vec![(16390, "\"Odd\".\"Mood\"".into())];
    assert_eq!(
        replaced(
            "select id from accounts where m = (select max(m) from orders)",
            &mood
        ),
        "SELECT id FROM accounts WHERE m = CAST('ok' AS \"Odd\".\"Mood\")"
    );
    // Arrays compared with IN are rows: an array literal of them would read as one array of
    // their elements.
    let mut moods = answer(16389, -1, &[Some("{ok}")]);
    moods.named_types = vec![(16389, "public.mood[]".into())];
    assert_eq!(
        replaced(
            "select id from accounts where m in (select ms from orders)",
            &moods
        ),
        "SELECT id FROM accounts WHERE m IN (SELECT * FROM (VALUES (CAST('{ok}' AS public.mood[]))) AS shardgate_rows (c1))"
    );
}

#[test]
fn a_value_keeps_its_columns_collation_as_an_implicit_one() {
    let mut label = answer(25, -1, &[Some("apple")]);
    label.collations = vec![(0, "pg_catalog.\"und-x-icu\"".into())];
    assert_eq!(
        replaced("select id from accounts where 'Z' < (select max(m) from orders)", &label),
        "SELECT id FROM accounts WHERE 'Z' < (SELECT CAST('apple' AS pg_catalog.text) COLLATE pg_catalog.\"und-x-icu\")"
    );
    // Under ANY, an expression: a subquery alone would be compared row by row.
    assert_eq!(
        replaced("select id from accounts where 'Z' in (select m from orders)", &label),
        "SELECT id FROM accounts WHERE 'Z' = ANY(COALESCE((SELECT CAST('{\"apple\"}' AS pg_catalog.text[]) COLLATE pg_catalog.\"und-x-icu\")))"
    );
}

#[test]
fn array_text_quotes_each_element() {
    assert_eq!(
        array_text(&[Some("a,b".into()), None, Some("{".into())]),
        "{\"a,b\",NULL,\"{\"}"
    );
}
