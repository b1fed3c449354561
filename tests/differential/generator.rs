//! Random SELECTs over the differential schema, built from the shapes applications and ORMs
//! send: filters of every kind, co-located and reference joins, derived tables, grouping with
//! HAVING, DISTINCT, aggregates of every type the schema has, ORDER BY with LIMIT and OFFSET.
//!
//! Each query says whether its row order is determined. When it is not, the rows are compared
//! as a multiset; LIMIT and OFFSET are only generated under an order that is total (it ends in
//! a unique key, or in every group column), since otherwise PostgreSQL itself may answer
//! either way.

use super::Rng;

pub struct Query {
    pub sql: String,
    pub ordered: bool,
}

/// A column of `accounts` usable in a filter, with literals of its type.
pub fn filter(rng: &mut Rng, q: &str) -> String {
    let col = |c: &str| format!("{q}{c}");
    // The outer row's key, qualified as a correlated subquery must name it.
    let outer = if q.is_empty() {
        "accounts.id".to_string()
    } else {
        col("id")
    };
    // The last three shapes are refused over several shards: drawn less often, so that most
    // queries stay of shapes the proxy answers.
    let arm = match rng.below(36) {
        n if n >= 33 && rng.below(3) != 0 => rng.below(33),
        n => n,
    };
    match arm {
        // Subqueries whose answer needs every shard's rows: a group's count, a limit over an
        // order, an overall maximum.
        33 => format!(
            "{} in (select region from accounts a3 group by region having count(*) > {})",
            col("region"),
            35 + rng.below(20)
        ),
        34 => format!(
            "{} in (select id from accounts a3 order by balance desc, id limit {})",
            col("id"),
            1 + rng.below(30)
        ),
        35 => format!(
            "{} >= (select max(amount) from orders o2) - {}",
            col("balance"),
            rng.below(600)
        ),
        30 => format!(
            "{} > (select coalesce(sum(amount), 0) from orders o2 where o2.account_id = {outer})",
            col("balance")
        ),
        31 => format!(
            "{} not in (select order_no from orders o2 where o2.account_id = ({outer}))",
            rng.below(4)
        ),
        // Not tied by the key: each shard would see only its own orders.
        32 => format!(
            "{} < (select max(amount) from orders o2 where o2.order_no = {})",
            col("balance"),
            rng.below(4)
        ),
        22 => format!(
            "{} = any('{{{}, {}, {}}}')",
            col("id"),
            rng.below(260),
            rng.below(260),
            rng.below(260)
        ),
        23 => format!(
            "({}, {}) in (({}, {}), ({}, {}))",
            col("id"),
            col("region"),
            rng.below(260),
            rng.below(5),
            rng.below(260),
            rng.below(5)
        ),
        24 => format!(
            "{} in (select account_id from orders where amount > {})",
            col("id"),
            rng.below(900)
        ),
        25 => format!(
            "exists (select 1 from orders o2 where o2.account_id = {} and o2.order_no = {})",
            col("id"),
            rng.below(4)
        ),
        26 => format!("{}::text like '{}%'", col("id"), 1 + rng.below(9)),
        27 => format!("{} is distinct from {}", col("region"), rng.below(5)),
        28 => format!("{} = {}::bigint", col("id"), rng.below(260)),
        29 => format!("{} > 100000", col("id")),
        0 => format!("{} > {}", col("balance"), rng.below(1500) as i64 - 500),
        1 => format!("{} <= {}.5", col("balance"), rng.below(1000) as i64 - 200),
        2 => format!(
            "{} < {}",
            col("score"),
            (rng.below(1000) as i64 - 500) as f64 / 8.0
        ),
        3 => format!("{} is null", col("score")),
        4 => format!("{} is not null", col("note")),
        5 => format!(
            "{} = '{}'",
            col("owner"),
            rng.pick(&["ann", "bob", "Cid", "émile", "Zed", "nobody"])
        ),
        6 => format!("{} in ('ann', 'Zed', 'al')", col("owner")),
        7 => format!(
            "{} like '{}%'",
            col("owner"),
            rng.pick(&["a", "Z", "é", "d"])
        ),
        8 => {
            let a = rng.below(260);
            format!("{} between {a} and {}", col("id"), a + rng.below(80))
        }
        9 => format!("{} = {}", col("id"), rng.below(260)),
        10 => format!(
            "{} in ({}, {}, {})",
            col("id"),
            rng.below(260),
            rng.below(260),
            rng.below(260)
        ),
        11 => format!(
            "({} = {} or {} = {})",
            col("id"),
            rng.below(260),
            col("id"),
            rng.below(260)
        ),
        12 => format!("{} = {}", col("active"), rng.below(2) == 0),
        13 => format!("{} > date '20{:02}-06-01'", col("opened"), rng.below(25)),
        14 => format!(
            "{} < timestamptz '2024-{:02}-15 12:00:00+00'",
            col("updated"),
            1 + rng.below(12)
        ),
        15 => format!("{} = {}", col("region"), rng.below(5)),
        16 => format!(
            "{} in (select id from regions where label like '%{}%')",
            col("region"),
            rng.pick(&["th", "e", "st"])
        ),
        17 => format!("coalesce({}, 0) > 0", col("score")),
        18 => format!("not ({} > {})", col("balance"), rng.below(800)),
        19 => format!("{} <> 'n{}'", col("note"), rng.below(30)),
        20 => format!("{} % {} = {}", col("id"), 2 + rng.below(5), rng.below(2)),
        _ => format!("{} ilike '%{}%'", col("owner"), rng.pick(&["A", "o", "E"])),
    }
}

pub fn filters(rng: &mut Rng, q: &str) -> Option<String> {
    let n = rng.below(4);
    if n == 0 {
        return None;
    }
    let parts: Vec<String> = (0..n).map(|_| filter(rng, q)).collect();
    let joiner = if rng.below(5) == 0 { " or " } else { " and " };
    Some(parts.join(joiner))
}

/// Aggregates over `accounts` (qualified by `q`) whose result PostgreSQL computes exactly, so
/// that a merged answer can be compared to the last digit (some the proxy must refuse). Sums
/// and averages of float8 are left out: their last digits depend on the order rows are added
/// in.
fn aggregate(rng: &mut Rng, q: &str) -> String {
    let c = |name: &str| format!("{q}{name}");
    // ratio holds equal values written with different scales: its sum, average and distinct
    // count are determined, while which spelling a maximum or a group shows is not, on one
    // server either.
    match rng.below(71) {
        // Ordered, DISTINCT and ordered-set aggregates, evaluated once over the gathered
        // values (ties broken by the key: the order is determined).
        62 => format!("string_agg({}, ',' order by {} desc)", c("note"), c("id")),
        63 => format!("array_agg(distinct {0} order by {0})", c("region")),
        64 => format!("jsonb_agg({} order by {})", c("balance"), c("id")),
        65 => format!(
            "json_agg({} order by {} desc, {})",
            c("owner"),
            c("owner"),
            c("id")
        ),
        66 => format!(
            "percentile_cont({}) within group (order by {})",
            rng.pick(&["0.5", "0.1", "array[0.25, 0.75]"]),
            c("balance")
        ),
        67 => format!("mode() within group (order by {})", c("region")),
        68 => format!("jsonb_object_agg({}, {})", c("id"), c("owner")),
        69 => format!("sum(distinct {})", c("balance")),
        70 => format!(
            "avg(distinct {}) filter (where {})",
            c("region"),
            c("active")
        ),
        // Variance and standard deviation: exact over integers and numerics, refused over
        // floats.
        58 => format!(
            "{}({})",
            rng.pick(&["stddev", "variance", "stddev_pop", "var_pop"]),
            c("balance")
        ),
        59 => format!(
            "{}({})",
            rng.pick(&["stddev_samp", "var_samp"]),
            c("region")
        ),
        60 => format!(
            "round({}({}), 4)",
            rng.pick(&["stddev", "var_pop"]),
            c("ratio")
        ),
        61 => format!("stddev({})", c("score")),
        // uuid has no min or max before PostgreSQL 16.
        52 => format!("{}({}::text)", rng.pick(&["min", "max"]), c("tag")),
        53 => format!("count(distinct {})", c("tag")),
        54 => format!("max({} || {})", c("owner"), c("note")),
        55 => format!("{}({})", rng.pick(&["bit_and", "bit_xor"]), c("region")),
        56 => format!("min({}::date)", c("updated")),
        57 => format!("sum({}) filter (where {})", c("balance"), c("active")),
        // Items computed over the merged aggregates.
        45 => "count(*)::int".into(),
        46 => format!("round(avg({}), 2)", c("balance")),
        47 => format!("sum({}) / count(*)", c("balance")),
        48 => format!("max({0}) - min({0})", c("id")),
        49 => format!("coalesce(max({}), 'none') || count(*)", c("note")),
        50 => format!("avg({})::int * 10", c("region")),
        51 => format!("coalesce(sum({}), 1)", c("region")),
        // Django's Sum(..., default=0), and defaults the proxy must refuse.
        39 => format!("coalesce(sum({}), 0)", c("balance")),
        40 => format!("coalesce(count({}), 0)", c("score")),
        41 => format!(
            "coalesce({}({}), {})",
            rng.pick(&["sum", "max", "avg"]),
            c("region"),
            rng.pick(&["0", "0.0", "1"])
        ),
        42 => format!("avg({}) filter (where {})", c("balance"), filter(rng, q)),
        43 => format!("min({}) filter (where {})", c("owner"), filter(rng, q)),
        44 => format!(
            "count(distinct {}) filter (where {})",
            c("region"),
            filter(rng, q)
        ),
        36 => format!("sum({})", c("ratio")),
        37 => format!("avg({})", c("ratio")),
        38 => format!("count(distinct {})", c("ratio")),
        34 => format!("regr_count({}, {})", c("id"), c("region")),
        35 => format!("bit_or({})", c("region")),
        26 => format!("sum({} * 2)", c("balance")),
        27 => format!("avg({} + {})", c("balance"), c("id")),
        28 => format!("min(lower({}))", c("owner")),
        29 => format!("count(distinct lower({}))", c("owner")),
        30 => format!("max(case when {} then {} end)", c("active"), c("id")),
        31 => format!("sum({}) filter (where {} > 100000)", c("balance"), c("id")),
        32 => format!("avg({}::int)", c("balance")),
        33 => format!("count(distinct {} % 3)", c("id")),
        0 => "count(*)".into(),
        1 => format!("count({})", c("score")),
        2 => format!("count({})", c("note")),
        3 => format!("count(distinct {})", c("owner")),
        4 => format!("sum({})", c("balance")),
        5 => format!("avg({})", c("balance")),
        6 => format!("min({})", c("balance")),
        7 => format!("max({})", c("balance")),
        8 => format!("min({})", c("owner")),
        9 => format!("max({})", c("note")),
        10 => format!("min({})", c("opened")),
        11 => format!("max({})", c("updated")),
        12 => format!("sum({})", c("region")),
        13 => format!("avg({})", c("region")),
        14 => format!("bool_and({})", c("active")),
        15 => format!("bool_or({})", c("active")),
        16 => format!("min({})", c("score")),
        17 => format!("max({})", c("score")),
        18 => format!("sum({})", c("id")),
        19 => format!("avg({})", c("id")),
        20 => format!("count(distinct {})", c("region")),
        21 => format!("every({})", c("active")),
        22 => format!("count({}) filter (where {})", c("id"), filter(rng, q)),
        23 => format!("sum({}) filter (where {})", c("balance"), filter(rng, q)),
        24 => format!("max({} + 1)", c("id")),
        _ => format!("count(distinct {})", c("opened")),
    }
}

/// A select-list constant beside aggregates (`SELECT 'total', count(*)`).
fn constant(rng: &mut Rng) -> String {
    rng.pick(&["'total'", "1", "-2.5", "null", "1 + 2", "'k'::text", "true"])
        .to_string()
}

/// Group columns or expressions of `accounts`.
fn group_column(rng: &mut Rng, q: &str) -> String {
    let c = |name: &str| format!("{q}{name}");
    match rng.below(13) {
        9 => format!("extract(month from {})", c("opened")),
        10 => format!("case when {} > 0 then 'pos' else 'neg' end", c("balance")),
        11 => format!("coalesce({}, {})", c("note"), c("owner")),
        12 => format!("{}::date", c("updated")),
        0 => c("owner"),
        1 => c("region"),
        2 => c("active"),
        3 => c("note"),
        4 => format!("{} % 4", c("id")),
        5 => format!("date_trunc('year', {})", c("opened")),
        6 => format!("lower({})", c("owner")),
        7 => format!("{} is null", c("score")),
        _ => format!("{} > 0", c("balance")),
    }
}

/// A plain (not grouped) output column of `accounts`.
fn plain_column(rng: &mut Rng, q: &str) -> String {
    let c = |name: &str| format!("{q}{name}");
    let outer = if q.is_empty() {
        "accounts.id".to_string()
    } else {
        c("id")
    };
    match rng.below(18) {
        // Not correlated: every shard's orders make the answer.
        17 => "(select max(o2.amount) from orders o2)".to_string(),
        // Correlated by the key, as Django's Subquery and SQLAlchemy's scalar_subquery() write.
        14 => format!("(select count(*) from orders o2 where o2.account_id = {outer})"),
        15 => format!(
            "(select max(o2.order_no) from orders o2 where o2.account_id = ({outer}) group by o2.account_id)"
        ),
        16 => format!(
            "(select o2.amount from orders o2 where o2.account_id = {outer} order by o2.order_no desc limit 1)"
        ),
        0 => c("owner"),
        1 => c("balance"),
        2 => c("score"),
        3 => c("active"),
        4 => c("opened"),
        5 => c("updated"),
        6 => c("tag"),
        7 => c("note"),
        8 => c("region"),
        9 => format!("{} * 2", c("balance")),
        10 => format!("upper({})", c("owner")),
        11 => format!("coalesce({}, 'none')", c("note")),
        12 => format!("{} + 1", c("id")),
        _ => format!("extract(year from {})", c("opened")),
    }
}

fn direction(rng: &mut Rng) -> &'static str {
    const DIRECTIONS: [&str; 4] = ["", " desc", " asc nulls first", " desc nulls last"];
    DIRECTIONS[rng.below(4) as usize]
}

/// LIMIT and OFFSET, only where the order is total. Now and then a limit PostgreSQL reads as
/// none (NULL, ALL) or one at a bigint's end.
fn window(rng: &mut Rng, sql: &mut String) {
    if rng.below(2) == 0 {
        match rng.below(10) {
            0 => sql.push_str(&format!(
                " limit {}",
                rng.pick(&["null", "all", "9223372036854775807"])
            )),
            _ => sql.push_str(&format!(" limit {}", rng.below(25))),
        }
    }
    if rng.below(3) == 0 {
        sql.push_str(&format!(" offset {}", rng.below(40)));
    }
}

/// Rows of accounts, with a total order when one is asked for.
fn plain(rng: &mut Rng) -> Query {
    let (from, q, key) = match rng.below(8) {
        5 => (
            "accounts a left join orders o on o.account_id = a.id".to_string(),
            "a.",
            "a.id, o.order_no".to_string(),
        ),
        6 => (
            "accounts a left join regions r on r.id = a.region".to_string(),
            "a.",
            "a.id".to_string(),
        ),
        // The reference table's rows kept by the outer join: refused over several shards.
        7 => (
            format!(
                "regions r {} join accounts a on a.id = r.id * 50",
                rng.pick(&["left", "full"])
            ),
            "a.",
            "r.id, a.id".to_string(),
        ),
        0 | 1 => ("accounts".to_string(), "", "id".to_string()),
        2 => (
            "accounts a join orders o on o.account_id = a.id".to_string(),
            "a.",
            "a.id, o.order_no".to_string(),
        ),
        3 => (
            "accounts a join regions r on r.id = a.region".to_string(),
            "a.",
            "a.id".to_string(),
        ),
        // A derived table that keeps the top rows of an order: its limit needs every shard.
        4 if rng.below(3) == 0 => (
            format!(
                "(select * from accounts order by {} limit {}) a",
                rng.pick(&["balance desc, id", "owner, id", "id desc"]),
                1 + rng.below(40)
            ),
            "a.",
            "a.id".to_string(),
        ),
        _ => (
            format!("(select * from accounts where {}) a", filter(rng, "")),
            "a.",
            "a.id".to_string(),
        ),
    };
    let n = 1 + rng.below(3);
    let mut cols: Vec<String> = (0..n).map(|_| plain_column(rng, q)).collect();
    // The joined tables' own columns (a derived table's filter may name orders o2).
    if from.contains("orders o on") && rng.below(2) == 0 {
        cols.push("o.amount".into());
    }
    if from.contains("regions r ") && rng.below(2) == 0 {
        cols.push("r.label".into());
    }
    let distinct = rng.below(6) == 0;
    // The total a paginated listing sends beside each page.
    let total = if !distinct && rng.below(6) == 0 {
        rng.pick(&[
            ", count(*) over () as total".to_string(),
            format!(", count({q}note) over ()"),
            format!(", count(*) filter (where {q}active) over () as n"),
            format!(", sum({q}balance) over () as s"),
            format!(", sum({q}region) filter (where {q}active) over ()"),
        ])
        .clone()
    } else {
        String::new()
    };
    let mut sql = if distinct {
        format!("select distinct {} from {from}", cols.join(", "))
    } else {
        format!("select {key}, {}{total} from {from}", cols.join(", "))
    };
    if let Some(w) = filters(rng, q) {
        sql.push_str(&format!(" where {w}"));
    }
    let ordered = rng.below(3) != 0;
    if ordered {
        let mut order: Vec<String> = (0..rng.below(3))
            .map(|_| format!("{}{}", rng.pick(&cols), direction(rng)))
            .collect();
        if distinct {
            // Every output column, so the order is total.
            order.extend(cols.iter().map(|c| format!("{c}{}", direction(rng))));
        } else {
            order.push(key.clone());
        }
        sql.push_str(&format!(" order by {}", order.join(", ")));
        window(rng, &mut sql);
    }
    Query { sql, ordered }
}

/// Aggregates over the whole of accounts (or of a join), one row.
fn overall(rng: &mut Rng) -> Query {
    let (from, q) = match rng.below(4) {
        0 => (
            "accounts a join orders o on o.account_id = a.id".to_string(),
            "a.",
        ),
        1 => (
            "accounts a left join regions r on r.id = a.region".to_string(),
            "a.",
        ),
        _ => ("accounts".to_string(), ""),
    };
    let mut aggs: Vec<String> = (0..1 + rng.below(4)).map(|_| aggregate(rng, q)).collect();
    if rng.below(4) == 0 {
        aggs.push(constant(rng));
    }
    let mut sql = format!("select {} from {from}", aggs.join(", "));
    if let Some(w) = filters(rng, q) {
        sql.push_str(&format!(" where {w}"));
    }
    Query { sql, ordered: true }
}

/// Grouped aggregates, ordered by every group column when ordered.
fn grouped(rng: &mut Rng) -> Query {
    let (from, q) = if rng.below(4) == 0 {
        (
            "accounts a join orders o on o.account_id = a.id".to_string(),
            "a.",
        )
    } else {
        ("accounts".to_string(), "")
    };
    let groups: Vec<String> = (0..1 + rng.below(2))
        .map(|_| group_column(rng, q))
        .collect();
    let aggs: Vec<String> = (0..1 + rng.below(3)).map(|_| aggregate(rng, q)).collect();
    let constant = if rng.below(4) == 0 {
        format!(", {}", constant(rng))
    } else {
        String::new()
    };
    // ROLLUP, CUBE or GROUPING SETS now and then, with `grouping(...)` beside them: the NULL
    // a set writes for a column it leaves out must stay apart from a NULL value.
    let sets = match rng.below(6) {
        0 => Some(format!("rollup({})", groups.join(", "))),
        1 if groups.len() > 1 => Some(format!("cube({})", groups.join(", "))),
        2 => Some(format!("grouping sets (({}), ())", groups.join(", "))),
        _ => None,
    };
    let marker = match &sets {
        Some(_) if rng.below(2) == 0 => format!(", grouping({})", groups[0]),
        _ => String::new(),
    };
    let mut sql = format!(
        "select {}, {}{constant}{marker} from {from}",
        groups.join(", "),
        aggs.join(", ")
    );
    if let Some(w) = filters(rng, q) {
        sql.push_str(&format!(" where {w}"));
    }
    sql.push_str(&format!(
        " group by {}",
        sets.clone().unwrap_or_else(|| groups.join(", "))
    ));
    if rng.below(3) == 0 {
        let having = [
            "count(*)".to_string(),
            format!("max({q}id)"),
            format!("min({q}region)"),
            format!("count(distinct {q}owner)"),
            // Not selected: carried hidden.
            format!("avg({q}balance)"),
            format!("count(distinct {q}region)"),
            // Computed from merged aggregates.
            "count(*)::int * 2".to_string(),
            format!("sum({q}balance) / count(*)"),
        ];
        if rng.below(4) == 0 {
            // A combined boolean against a constant, in the spellings PostgreSQL reads, or
            // alone.
            let f = rng.pick(&["bool_or", "bool_and", "every"]);
            sql.push_str(&match rng.below(4) {
                0 => format!(" having {}{f}({q}active)", rng.pick(&["", "not "])),
                _ => format!(
                    " having {f}({q}active) = {}",
                    rng.pick(&["true", "false", "'t'", "'false'", "'yes'", "'0'"])
                ),
            });
        } else {
            let (a, b) = (rng.pick(&having).clone(), rng.pick(&having).clone());
            let (n, m) = (rng.below(20), rng.below(20));
            // Conditions only PostgreSQL's own evaluation reads, over the merged groups.
            sql.push_str(&match rng.below(8) {
                0 => format!(" having {a} > {n} or {b} < {m}"),
                1 => format!(" having {a} between {} and {}", n.min(m), n.max(m)),
                2 => format!(" having {a} in ({n}, {m}, {})", n + m),
                3 => format!(" having not ({a} > {n}) and {b} is not null"),
                4 => format!(" having sum({q}balance) > min({q}id) * {n}"),
                _ => format!(" having {a} > {n}"),
            });
        }
    }
    // Under grouping sets, ordering by the group columns is not total (a set's NULL ties
    // with a NULL value), so those rows are compared as a multiset.
    let ordered = sets.is_none() && rng.below(3) != 0;
    if ordered {
        let mut order: Vec<String> = Vec::new();
        if rng.below(3) == 0 {
            // By an aggregate first; the group columns after it keep the order total.
            order.push(format!("{}{}", aggs[0], direction(rng)));
        }
        order.extend(groups.iter().map(|g| format!("{g}{}", direction(rng))));
        sql.push_str(&format!(" order by {}", order.join(", ")));
        window(rng, &mut sql);
    }
    Query { sql, ordered }
}

/// A derived table or CTE over grouped rows, read again outside.
fn nested(rng: &mut Rng) -> Query {
    let inner = grouped(rng);
    // Without its own ORDER BY, the last one (a subquery in its filter may have another).
    let inner_sql = match inner.sql.rsplit_once(" order by ") {
        Some((body, _)) if inner.ordered => body.to_string(),
        _ => inner.sql.clone(),
    };
    if rng.below(3) == 0 {
        // Django's values("x", ...).distinct().count(), over one column or several.
        let w = filters(rng, "")
            .map(|w| format!(" where {w}"))
            .unwrap_or_default();
        let mut cols = vec![plain_column(rng, "")];
        for _ in 0..rng.below(3) {
            cols.push(group_column(rng, ""));
        }
        return Query {
            sql: format!(
                "select count(*) from (select distinct {} from accounts{w}) subquery",
                cols.join(", ")
            ),
            ordered: true,
        };
    }
    let sql = if rng.below(2) == 0 {
        format!("select count(*) from ({inner_sql}) s")
    } else {
        format!("with s as ({inner_sql}) select count(*) from s")
    };
    Query { sql, ordered: true }
}

/// Aggregates of accounts per region, every region kept by a LEFT JOIN (Django's
/// `annotate(Count(...))` over a reference parent), with shapes an unmatched region would
/// change over several shards among them (the proxy must refuse those).
fn kept(rng: &mut Rng) -> Query {
    let on = rng.pick(&[
        "",
        " and a.balance > 1200",
        " and a.active",
        " and a.id < 30",
    ]);
    let aggs: Vec<&str> = (0..1 + rng.below(3))
        .map(|_| {
            *rng.pick(&[
                "count(a.id)",
                "sum(a.balance)",
                "min(a.owner)",
                "max(a.opened)",
                "avg(a.region)",
                "count(distinct a.owner)",
                "bool_or(a.active)",
                "count(*)",
                "count(coalesce(a.note, 'x'))",
                "coalesce(sum(a.balance), 0)",
                "count(a.id) filter (where a.balance > 0)",
                "sum(r.id)",
            ])
        })
        .collect();
    // (selected, grouped): the label alone is selected ungrouped as Django does, since it
    // depends on the grouped primary key.
    let (selected, groups) = *rng.pick(&[
        ("r.id", "r.id"),
        ("r.id, r.label", "r.id, r.label"),
        ("r.id, r.label", "r.id"),
        ("r.label", "r.label"),
        ("", ""),
        ("a.owner", "a.owner"),
    ]);
    let mut sql = if selected.is_empty() {
        format!("select {}", aggs.join(", "))
    } else {
        format!("select {selected}, {}", aggs.join(", "))
    };
    sql.push_str(&format!(
        " from regions r left join accounts a on a.region = r.id{on}"
    ));
    match rng.below(5) {
        0 => sql.push_str(&format!(" where r.id <> {}", rng.below(6))),
        1 => sql.push_str(" where r.label like '%t%'"),
        2 => sql.push_str(&format!(
            " where {}",
            rng.pick(&["a.balance > 0", "a.id is null"])
        )),
        _ => {}
    }
    if !groups.is_empty() {
        sql.push_str(&format!(" group by {groups}"));
        if rng.below(3) == 0 {
            sql.push_str(&format!(" having count(a.id) > {}", rng.below(30)));
        }
        sql.push_str(&format!(" order by {groups}"));
    }
    Query { sql, ordered: true }
}

pub fn query(rng: &mut Rng) -> Query {
    match rng.below(14) {
        13 => users(rng),
        12 => kept(rng),
        10 | 11 => odd(rng),
        0..=3 => plain(rng),
        4 | 5 => overall(rng),
        6..=8 => grouped(rng),
        _ => nested(rng),
    }
}

/// A filter of `users`, sharded by its text key: the key in the spellings PostgreSQL reads
/// as the same text (escapes, concatenation, casts), names no row holds, and ranges.
fn user_filter(rng: &mut Rng) -> String {
    // Some names past the last row's (user059).
    let n = rng.below(70);
    match rng.below(14) {
        0 => format!("name = 'user{n:03}'"),
        1 => format!("name in ('user{n:03}', 'user{:03}')", rng.below(70)),
        2 => format!("name = any('{{user{n:03}, user{:03}}}')", rng.below(70)),
        3 => format!("name like 'user0{}%'", rng.below(7)),
        4 => format!(
            "name between 'user{n:03}' and 'user{:03}'",
            n + rng.below(20)
        ),
        5 => format!("upper(name) = 'USER{n:03}'"),
        6 => format!("name = 'user{n:03}'::varchar"),
        7 => format!("name = 'user0' || '{n:02}'"),
        8 => format!("name = E'user\\x30{n:02}'"),
        9 => format!("name = U&'user\\0030{n:02}'"),
        10 => format!(
            "name = '{}'",
            rng.pick(&["USER001", "user001 ", " user001", "user1", ""])
        ),
        11 => format!("age > {}", 18 + rng.below(60)),
        12 => format!(
            "city = '{}'",
            rng.pick(&["Paris", "Lyon", "Oslo", "Kyoto", "Rome"])
        ),
        _ => format!("name >= 'user0{}'", rng.below(7)),
    }
}

/// Rows and aggregates of `users`: by its key, ordered by it, grouped by city.
fn users(rng: &mut Rng) -> Query {
    let w = (0..1 + rng.below(2))
        .map(|_| user_filter(rng))
        .collect::<Vec<_>>()
        .join(if rng.below(4) == 0 { " or " } else { " and " });
    match rng.below(4) {
        0 => {
            let mut sql = format!(
                "select name, age, city from users where {w} order by {}name{}",
                rng.pick(&["", "age desc, ", "city, "]),
                direction(rng)
            );
            window(rng, &mut sql);
            Query { sql, ordered: true }
        }
        1 => Query {
            sql: format!(
                "select city, count(*), sum(age), min(name), max(name), count(distinct age) from users where {w} group by city order by city"
            ),
            ordered: true,
        },
        2 => Query {
            sql: format!(
                "select count(*), avg(age), max(upper(name)), bool_and(age > 20) from users where {w}"
            ),
            ordered: true,
        },
        _ => Query {
            sql: format!("select name, age from users where {w}"),
            ordered: false,
        },
    }
}

/// Shapes beside the common ones: positional and aliased ORDER BY and GROUP BY, ORDER BY
/// an expression not selected, FETCH FIRST, UNION [ALL], a scalar subquery per row, windows.
fn odd(rng: &mut Rng) -> Query {
    let w = filters(rng, "")
        .map(|w| format!(" where {w}"))
        .unwrap_or_default();
    let mut sql = match rng.below(14) {
        // A window per key (each shard holds whole partitions), read directly or for the top
        // rows per key; by another column it must be refused.
        12 | 13 => {
            // Or numbered over the whole result, which the merge numbers in its order (a total
            // order for row_number, whose ties one server could number either way).
            if rng.below(3) == 0 {
                let f = rng.pick(&["row_number()", "rank()", "dense_rank()"]);
                let order = if *f == "row_number()" { "balance desc, id" } else { "balance desc" };
                let limit = if rng.below(2) == 0 {
                    format!(" limit {} offset {}", 1 + rng.below(20), rng.below(10))
                } else {
                    String::new()
                };
                return Query {
                    sql: format!(
                        "select id, owner, {f} over (order by {order}) as w from accounts{w} order by balance desc, id{limit}"
                    ),
                    ordered: true,
                };
            }
            let by = if rng.below(4) == 0 { "region" } else { "id" };
            let f = rng.pick(&[
                "row_number()",
                "rank()",
                "sum(balance)",
                "count(*)",
                "lag(owner)",
                "dense_rank()",
                "first_value(owner)",
                "avg(balance)",
                "ntile(2)",
                "count(*) filter (where active)",
            ]);
            let inner = format!(
                "select id, owner, {f} over (partition by {by} order by balance desc, id) as w from accounts{w}"
            );
            return Query {
                sql: if rng.below(2) == 0 {
                    format!("{inner} order by id")
                } else {
                    format!("select * from ({inner}) s where w is not null order by id limit 20")
                },
                ordered: true,
            };
        }
        // SQLAlchemy's exists(), over accounts or the co-located join.
        9 | 10 => {
            let from = rng.pick(&[
                "accounts",
                "accounts join orders o on o.account_id = accounts.id",
            ]);
            let w = filters(rng, "accounts.")
                .map(|w| format!(" where {w}"))
                .unwrap_or_default();
            let not = if rng.below(3) == 0 { "not " } else { "" };
            return Query {
                sql: format!("select {not}exists (select 1 from {from}{w}) as anon_1"),
                ordered: true,
            };
        }
        0 => format!("select id, owner, balance from accounts{w} order by 3{}, 1", direction(rng)),
        1 => format!("select id as k, note as n from accounts{w} order by n{}, k", direction(rng)),
        2 => format!("select id, owner from accounts{w} order by lower(owner){}, id", direction(rng)),
        3 => format!("select owner, count(*) from accounts{w} group by 1 order by 1{}", direction(rng)),
        4 => format!(
            "select owner, sum(balance) as total from accounts{w} group by owner order by total{}, owner",
            direction(rng)
        ),
        // Django's distinct("x") with order_by("x", ...): the first row per value.
        11 => format!(
            "select distinct on ({0}) {0}, id, balance from accounts{w} order by {0}{1}, balance desc, id",
            rng.pick(&["owner", "region", "active", "note", "ratio"]),
            direction(rng)
        ),
        // FETCH is a limit already: no LIMIT after it (PostgreSQL refuses two limits).
        5 => {
            return Query {
                sql: format!(
                    "select id, balance from accounts{w} order by id{} fetch first {} rows only",
                    rng.pick(&["", " offset 3 rows", " offset 1"]),
                    rng.below(20)
                ),
                ordered: true,
            }
        }
        // UNION ALL of each shard's rows, or UNION, which may add a reference or constant
        // branch; INTERSECT and EXCEPT of the keys.
        6 => {
            let union = *rng.pick(&["union all", "union", "intersect", "except", "except all"]);
            let more = match rng.below(4) {
                0 if union == "union" => " union select id from regions where id > 2",
                1 if union == "union" => " union select 17",
                _ => "",
            };
            let sql = format!(
                "select id from accounts{w} {union} select account_id from orders where order_no = {}{more}",
                rng.below(3)
            );
            if rng.below(2) == 0 {
                return Query {
                    sql,
                    ordered: false,
                };
            }
            // One column: rows equal in it are the same row, so the order is total.
            format!("{sql} order by 1{}", direction(rng))
        }
        7 => format!(
            "select id, (select label from regions r where r.id = accounts.region) from accounts{w} order by id"
        ),
        _ => format!(
            "select region, owner, count(*) from accounts{w} group by region, owner having sum(balance) > {} order by region, owner",
            rng.below(500)
        ),
    };
    window(rng, &mut sql);
    Query { sql, ordered: true }
}
