//! Reference rows that an outer join against a sharded table keeps unmatched:
//! `SELECT ... FROM regions r LEFT JOIN accounts a ON a.region = r.id ...`, the list of every
//! region with its accounts, or none.
//!
//! Every shard holds the reference table whole, so each would return, NULL-extended, the
//! reference rows that match nothing *on that shard*, though another shard may match them.
//! PostgreSQL keeps a reference row unmatched when no row of the whole table matches it. So the
//! executor first reads which reference rows some shard matches (`KeptJoin::matched`: the
//! distinct texts of the reference rows of the inner join on the same condition, merged over
//! the shards), in the statement's snapshot. Then every shard runs the statement with the
//! join made inner (its own matched rows) and one shard runs it as written, keeping only the
//! NULL-extended rows of reference rows outside that set (`home_text`). The shards' rows are
//! then a partition of PostgreSQL's, and merge as any scatter's do: ORDER BY, LIMIT,
//! aggregates and `count(*)` included.
//!
//! A FULL join keeps the sharded side's unmatched rows too: those are each shard's own (every
//! shard has the whole reference table to match them against), so the other shards run the
//! join keeping the sharded side only.
//!
//! A reference row is known by its whole row's text, the same on every copy (the copies hold
//! the same values, and one session's settings write them the same way). Only one reference
//! table joined to one sharded table (LEFT, RIGHT the other way round, or FULL) on an ON
//! condition without subqueries qualifies, the LEFT join optionally followed by LEFT or
//! inner joins of sharded tables co-located with it; anything else keeps the refusal. A VALUES list
//! under an alias stands for a reference table: every shard reads the same rows (it is how a
//! derived table answered first comes back, see `derived`).

use super::{array_text, parse_expr, parse_query, quoted, refusal};
use crate::error::PgError;
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, ObjectName, Query, SetExpr, TableFactor,
};
use std::ops::ControlFlow;

/// The start of the planner's refusal of an outer join that keeps a side without sharded
/// tables.
pub const KEPT_SIDE: &str = "an outer join keeping every row of its";

/// Whether the planner refused a statement for the rows an outer join keeps unmatched.
pub fn refused_for_kept_rows(refusal: &PgError) -> bool {
    refusal.message.starts_with(KEPT_SIDE)
}

/// A statement whose outer join keeps a reference table's rows against a sharded table.
#[derive(Debug, Clone)]
pub struct KeptJoin {
    /// The text of each reference row that some row of the sharded table matches.
    pub matched: Query,
    /// The statement with the join made inner: each shard's matched rows.
    pub inner: Query,
    /// The reference table's columns and no row, to learn their types.
    pub columns: Query,
    /// The reference row's qualifier, and the sharded row's (`r`, `a`).
    reference: String,
    sharded: String,
    /// The join as the statement wrote it, which one shard runs.
    home: Join,
    /// The join the other shards run: the statement's without keeping the reference side.
    others: Join,
}

/// An ON join of the two tables, by the sides it keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Join {
    Inner,
    Left,
    Right,
    Full,
}

impl Join {
    fn of(op: &JoinOperator) -> Option<(Join, &Expr)> {
        use JoinOperator as J;
        match op {
            J::Join(JoinConstraint::On(c)) | J::Inner(JoinConstraint::On(c)) => {
                Some((Join::Inner, c))
            }
            J::Left(JoinConstraint::On(c)) | J::LeftOuter(JoinConstraint::On(c)) => {
                Some((Join::Left, c))
            }
            J::Right(JoinConstraint::On(c)) | J::RightOuter(JoinConstraint::On(c)) => {
                Some((Join::Right, c))
            }
            J::FullOuter(JoinConstraint::On(c)) => Some((Join::Full, c)),
            _ => None,
        }
    }

    fn operator(self, cond: Expr) -> JoinOperator {
        let on = JoinConstraint::On(cond);
        match self {
            Join::Inner => JoinOperator::Inner(on),
            Join::Left => JoinOperator::LeftOuter(on),
            Join::Right => JoinOperator::RightOuter(on),
            Join::Full => JoinOperator::FullOuter(on),
        }
    }
}

/// The outer join of `q` that keeps a reference table's rows, when it is the one shape
/// handled here.
pub fn kept_join(q: &Query, placement: &Placement) -> Option<KeptJoin> {
    if q.with.is_some() || !q.locks.is_empty() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [twj] = s.from.as_slice() else {
        return None;
    };
    let (join, further) = twj.joins.split_first()?;
    let (home, cond) = Join::of(&join.join_operator)?;
    let reference_first = kept_qualifier(&twj.relation, placement).is_some();
    // Sharded tables joined further on, LEFT or inner, to the rows the first join keeps
    // (Django's `Count("item__line")` over a reference parent): where that join's row is
    // NULL-extended so are theirs, on any shard, and the planner checks that they are
    // co-located with its sharded table when it plans the join made inner.
    let further_fits = further.iter().all(|j| {
        matches!(
            Join::of(&j.join_operator),
            Some((Join::Left | Join::Inner, _))
        ) && qualifier(&j.relation, placement, |r| {
            matches!(r, TableRule::Sharded { .. })
        })
        .is_some()
    });
    let rides_along = reference_first && home == Join::Left && further_fits;
    if !(further.is_empty() || rides_along) {
        return None;
    }
    // The sharded side's unmatched rows of a FULL join are each shard's own: every shard keeps
    // them, as the statement does.
    let others = match (home, reference_first) {
        (Join::Left, true) | (Join::Right, false) => Join::Inner,
        (Join::Full, true) => Join::Right,
        (Join::Full, false) => Join::Left,
        _ => return None,
    };
    let (kept, other) = if reference_first {
        (&twj.relation, &join.relation)
    } else {
        (&join.relation, &twj.relation)
    };
    let reference = kept_qualifier(kept, placement)?;
    let sharded = qualifier(other, placement, |r| matches!(r, TableRule::Sharded { .. }))?;
    // Evaluated twice (for the matched rows, then in the statement), the condition must give
    // the same answer both times: no subquery, nothing random (the clock is the transaction's).
    if has_subquery(cond) || crate::router::plan::differing_besides_the_clock(cond).is_some() {
        return None;
    }
    let mut inner = q.clone();
    if let SetExpr::Select(s) = inner.body.as_mut() {
        s.from[0].joins[0].join_operator = others.operator(cond.clone());
    }
    let text = format!(
        "SELECT DISTINCT CAST(ROW({reference}.*) AS text) FROM {kept} JOIN {other} ON {cond}"
    );
    let matched = parse_query(&text)?;
    let columns = parse_query(&format!("SELECT {reference}.* FROM {kept} LIMIT 0"))?;
    Some(KeptJoin {
        matched,
        inner,
        columns,
        reference,
        sharded,
        home,
        others,
    })
}

/// Whether a column of this type may be written differently by two copies holding the same
/// value: money (written under each server's `lc_monetary`), object identifiers (a `reg*`
/// value is written as the name of what that server numbered so, or as the number when it has
/// no such object), row and transaction ids; their arrays too. A reference row with one
/// cannot be known by its text across shards, so such a table keeps the refusal.
pub fn text_differs_between_copies(type_oid: u32) -> bool {
    const TYPES: &[u32] = &[
        24, 26, 27, 28, 29, 271, 790, 791, 1008, 1010, 1011, 1012, 1028, 2202, 2203, 2204, 2205,
        2206, 2207, 2208, 2209, 2210, 2211, 3734, 3735, 3769, 3770, 4089, 4090, 4096, 4097, 4191,
        4192, 5069,
    ];
    TYPES.contains(&type_oid)
}

/// The name the kept side goes by, when every shard reads it whole and alike: a reference
/// table, or a VALUES list under an alias (a derived table the proxy answered first and wrote
/// as its rows, as SQLAlchemy's joinedload over a LIMIT reads one).
fn kept_qualifier(t: &TableFactor, placement: &Placement) -> Option<String> {
    match t {
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            ..
        } if matches!(subquery.body.as_ref(), SetExpr::Values(_))
            && subquery.order_by.is_none()
            && subquery.limit_clause.is_none() =>
        {
            Some(alias.name.to_string())
        }
        _ => qualifier(t, placement, |r| matches!(r, TableRule::Reference)),
    }
}

/// The name a plain table of the wanted kind goes by in the statement: its alias, or its
/// name as written.
fn qualifier(
    t: &TableFactor,
    placement: &Placement,
    wanted: impl Fn(&TableRule) -> bool,
) -> Option<String> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = t
    else {
        return None;
    };
    if !placement.rule(&name.to_string()).is_some_and(wanted) {
        return None;
    }
    Some(match alias {
        Some(a) if a.columns.is_empty() => a.name.to_string(),
        Some(_) => return None,
        None => ObjectName::to_string(name),
    })
}

fn has_subquery(e: &Expr) -> bool {
    sqlparser::ast::visit_expressions(e, |e: &Expr| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// The text one shard runs instead of `shard_sql` (the scatter's text of `KeptJoin::inner`):
/// the join kept as the statement wrote it, and of the NULL-extended rows only those of
/// reference rows outside `matched`.
pub fn home_text(
    shard_sql: &str,
    kept: &KeptJoin,
    matched: &[Option<String>],
) -> Result<String, PgError> {
    let unexpected = || refusal("the outer join's rewritten statement has an unexpected shape");
    let mut q = parse_query(shard_sql).ok_or_else(unexpected)?;
    let SetExpr::Select(s) = q.body.as_mut() else {
        return Err(unexpected());
    };
    let [twj] = s.from.as_mut_slice() else {
        return Err(unexpected());
    };
    let Some(join) = twj.joins.first_mut() else {
        return Err(unexpected());
    };
    match Join::of(&join.join_operator) {
        Some((op, cond)) if op == kept.others => {
            join.join_operator = kept.home.operator(cond.clone());
        }
        _ => return Err(unexpected()),
    }
    let set = quoted(&array_text(matched));
    let keep = parse_expr(&format!(
        "({}.ctid IS NOT NULL OR NOT (CAST(ROW({}.*) AS text) = ANY(CAST({set} AS text[]))))",
        kept.sharded, kept.reference
    ))?;
    s.selection = Some(match s.selection.take() {
        None => keep,
        Some(w) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(w))),
            op: BinaryOperator::And,
            right: Box::new(keep),
        },
    });
    Ok(q.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::router::plan::tests::query;

    fn kept(sql: &str) -> Option<KeptJoin> {
        kept_join(&query(sql), &crate::router::plan::tests::placement())
    }

    #[test]
    fn sharded_tables_joined_on_after_the_kept_join_ride_along() {
        let k = kept(
            "select c.code, count(l.id) from countries c left join accounts a on a.country = c.code left join ledger l on l.account_id = a.id group by 1",
        )
        .unwrap();
        assert_eq!(
            k.inner.to_string(),
            "SELECT c.code, count(l.id) FROM countries c INNER JOIN accounts a ON a.country = c.code LEFT JOIN ledger l ON l.account_id = a.id GROUP BY 1"
        );
        assert_eq!(
            k.matched.to_string(),
            "SELECT DISTINCT CAST(ROW(c.*) AS TEXT) FROM countries c JOIN accounts a ON a.country = c.code"
        );
        // Not after a RIGHT or FULL first join, not a reference table further on, not a
        // RIGHT join further on.
        for sql in [
            "select 1 from accounts a right join countries c on a.country = c.code left join ledger l on l.account_id = a.id",
            "select 1 from countries c left join accounts a on a.country = c.code left join countries d on d.code = a.country",
            "select 1 from countries c left join accounts a on a.country = c.code right join ledger l on l.account_id = a.id",
        ] {
            assert!(kept(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn a_values_list_stands_for_a_reference_table() {
        let k = kept(
            "select v.id, l.amount from (values (1, 'a'), (2, 'b')) as v (id, name) left join ledger l on l.account_id = v.id",
        )
        .unwrap();
        assert_eq!(
            k.matched.to_string(),
            "SELECT DISTINCT CAST(ROW(v.*) AS TEXT) FROM (VALUES (1, 'a'), (2, 'b')) AS v (id, name) JOIN ledger l ON l.account_id = v.id"
        );
        // A derived table that reads a table is no such list.
        assert!(kept(
            "select v.id, l.amount from (select id from countries) v left join ledger l on l.account_id = v.id"
        )
        .is_none());
    }

    #[test]
    fn a_reference_table_kept_against_a_sharded_one_is_read_in_two_parts() {
        let k = kept(
            "select c.code, a.id from countries c left join accounts a on a.country = c.code where c.code <> 'x' order by 1",
        )
        .unwrap();
        assert_eq!(
            k.matched.to_string(),
            "SELECT DISTINCT CAST(ROW(c.*) AS TEXT) FROM countries c JOIN accounts a ON a.country = c.code"
        );
        assert_eq!(k.columns.to_string(), "SELECT c.* FROM countries c LIMIT 0");
        assert_eq!(
            k.inner.to_string(),
            "SELECT c.code, a.id FROM countries c INNER JOIN accounts a ON a.country = c.code WHERE c.code <> 'x' ORDER BY 1"
        );
        let home = home_text(
            &k.inner.to_string(),
            &k,
            &[Some("(de,Germany)".into()), Some("(it's,\"a\\b\")".into())],
        )
        .unwrap();
        assert_eq!(
            home,
            "SELECT c.code, a.id FROM countries c LEFT OUTER JOIN accounts a ON a.country = c.code \
             WHERE (c.code <> 'x') AND (a.ctid IS NOT NULL OR NOT (CAST(ROW(c.*) AS TEXT) = ANY(CAST(\
             E'{\"(de,Germany)\",\"(it\\'s,\\\\\"a\\\\\\\\b\\\\\")\"}' AS TEXT[])))) ORDER BY 1"
        );
        // RIGHT JOIN the other way round, table names as qualifiers.
        let k = kept("select count(*) from accounts right join countries on accounts.country = countries.code").unwrap();
        let home = home_text(&k.inner.to_string(), &k, &[]).unwrap();
        assert!(
            home.contains("FROM accounts RIGHT OUTER JOIN countries"),
            "{home}"
        );
        assert!(home.ends_with("WHERE (accounts.ctid IS NOT NULL OR NOT (CAST(ROW(countries.*) AS TEXT) = ANY(CAST('{}' AS TEXT[]))))"), "{home}");
        // FULL: the other shards keep the sharded side's unmatched rows, one shard both sides'.
        let k =
            kept("select * from countries c full join accounts a on a.country = c.code").unwrap();
        let inner = k.inner.to_string();
        assert!(
            inner.contains("FROM countries c RIGHT OUTER JOIN accounts a"),
            "{inner}"
        );
        let home = home_text(&inner, &k, &[]).unwrap();
        assert!(
            home.contains("FROM countries c FULL JOIN accounts a"),
            "{home}"
        );
        let k =
            kept("select * from accounts a full join countries c on a.country = c.code").unwrap();
        assert!(k
            .inner
            .to_string()
            .contains("FROM accounts a LEFT OUTER JOIN countries c"));
    }

    #[test]
    fn other_shapes_keep_the_refusal() {
        for sql in [
            "select * from countries c left join accounts a using (code)",
            "select * from countries c left join accounts a on a.id in (select account_id from ledger)",
            "select * from countries c left join accounts a on a.country = c.code and random() < 0.5",
            "select * from countries c left join (select * from accounts) a on a.country = c.code",
            "select * from accounts a left join countries c on a.country = c.code",
            "select * from countries c (k) left join accounts a on a.country = c.k",
            "select * from countries c left join accounts a on a.country = c.code for update",
        ] {
            assert!(kept(sql).is_none(), "{sql}");
        }
        // A text that is not a single join any more is refused, not guessed at.
        let k =
            kept("select * from countries c left join accounts a on a.country = c.code").unwrap();
        assert!(home_text("select 1", &k, &[]).is_err());
    }
}
