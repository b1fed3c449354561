//! Assignments to a sharded table's key: `UPDATE ... SET key = ...` and `INSERT ... ON
//! CONFLICT DO UPDATE SET key = ...`.
//!
//! A row's key decides its shard, and a shard cannot move a row to another, so a write may not
//! change a key. Whether it does is known only row by row: an ORM's `save()` writes every
//! column, the key among them, with the value the row already has, and an upsert's `SET key =
//! excluded.key` names the value it conflicted on. So rather than refuse every statement that
//! names the key, the assigned value goes through `shardgate.unchanged_key(value, row's key,
//! what)` on the shard (see `txn::schema`), which passes the row's own value through and fails
//! the statement with 0A000 for any other (naming `what`, the key and table), before the row is
//! written.
//!
//! Invariants: a statement is guarded exactly when one of its assignments targets a sharded
//! table's key; the guarded text then goes to the shards in place of the client's (a
//! `Plan::Shard` becomes a one-part `Plan::Write`); what cannot be guarded (a key inside a
//! tuple target, `SET key = DEFAULT`) is refused.

use super::{last_ident, refuse, Plan};
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    Insert, ObjectName, OnConflict, OnConflictAction, OnInsert, Statement, TableFactor,
    TableObject, Value,
};

/// What the planner does with a statement's key assignments.
pub(super) enum Guard {
    /// No assignment targets a sharded table's key: plan the statement as written.
    None,
    /// Plan and send this statement instead.
    Guarded(Box<Statement>),
    Refused(Box<Plan>),
}

/// The statement with every assignment to its sharded table's key guarded.
pub(super) fn guard(stmt: &Statement, placement: &Placement) -> Guard {
    // Read first, so that the statements that name no key (nearly all) are not copied.
    let Some((name, qualifier, assignments)) = written(stmt) else {
        return Guard::None;
    };
    let Some(TableRule::Sharded { key_column, .. }) = placement.rule(&name.to_string()) else {
        return Guard::None;
    };
    let is_key = |c: &ObjectName| last_ident(c).eq_ignore_ascii_case(key_column);
    let mut at = Vec::new();
    for (i, Assignment { target, value }) in assignments.iter().enumerate() {
        match target {
            AssignmentTarget::ColumnName(c) if is_key(c) => {
                if matches!(value, Expr::Identifier(d) if d.quote_style.is_none() && d.value.eq_ignore_ascii_case("default"))
                {
                    return Guard::Refused(Box::new(moves_key(key_column, name)));
                }
                at.push((i, last_part(c)));
            }
            AssignmentTarget::Tuple(cs) if cs.iter().any(is_key) => {
                return Guard::Refused(Box::new(moves_key(key_column, name)))
            }
            _ => {}
        }
    }
    if at.is_empty() {
        return Guard::None;
    }
    let what = Expr::value(Value::SingleQuotedString(format!("{key_column} of {name}")));
    let mut guarded = stmt.clone();
    let assignments = match &mut guarded {
        Statement::Update(up) => &mut up.assignments,
        Statement::Insert(Insert {
            on:
                Some(OnInsert::OnConflict(OnConflict {
                    action: OnConflictAction::DoUpdate(d),
                    ..
                })),
            ..
        }) => &mut d.assignments,
        _ => unreachable!("`written` read an UPDATE or an upsert"),
    };
    for (i, column) in at {
        let value = &mut assignments[i].value;
        let row_key = Expr::CompoundIdentifier(vec![qualifier.clone(), column]);
        let assigned = std::mem::replace(value, Expr::value(Value::Null));
        *value = unchanged_key([assigned, row_key, what.clone()]);
    }
    Guard::Guarded(Box::new(guarded))
}

/// The table an UPDATE or an upsert's DO UPDATE writes, the name its row goes by (alias or
/// table name), and the assignments.
fn written(stmt: &Statement) -> Option<(&ObjectName, Ident, &[Assignment])> {
    match stmt {
        Statement::Update(up) => {
            let TableFactor::Table { name, alias, .. } = &up.table.relation else {
                return None;
            };
            let qualifier = match alias {
                Some(a) => a.name.clone(),
                None => last_part(name),
            };
            Some((name, qualifier, &up.assignments))
        }
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &ins.table else {
                return None;
            };
            let Some(OnInsert::OnConflict(OnConflict {
                action: OnConflictAction::DoUpdate(d),
                ..
            })) = &ins.on
            else {
                return None;
            };
            let qualifier = match &ins.table_alias {
                Some(a) => a.alias.clone(),
                None => last_part(name),
            };
            Some((name, qualifier, &d.assignments))
        }
        _ => None,
    }
}

/// A guarded statement's plan: its text, not the client's, goes to the shards.
pub(super) fn as_write(plan: Plan, guarded: &Statement) -> Plan {
    match plan {
        Plan::Shard { shard, .. } => Plan::Write {
            parts: vec![(shard, guarded.to_string())],
            sum: true,
            picks: Vec::new(),
            serialize: None,
            row_order: Vec::new(),
        },
        other => other,
    }
}

fn moves_key(key_column: &str, table: &ObjectName) -> Plan {
    refuse(
        format!("UPDATE may not change the shard key {key_column} of {table}"),
        "The row would belong on another shard. DELETE it and INSERT it with the new key instead.",
    )
}

fn last_part(name: &ObjectName) -> Ident {
    match name.0.last().and_then(|p| p.as_ident()) {
        Some(i) => i.clone(),
        None => Ident::new(last_ident(name)),
    }
}

/// `shardgate.unchanged_key(value, row_key, what)`.
fn unchanged_key(args: [Expr; 3]) -> Expr {
    let mut call = crate::sql::expression("shardgate.unchanged_key(NULL, NULL, NULL)")
        .expect("a constant call parses");
    if let Expr::Function(f) = &mut call {
        if let FunctionArguments::List(list) = &mut f.args {
            list.args = args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect();
        }
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn placement() -> Placement {
        crate::router::plan::tests::placement()
    }

    fn guarded(sql: &str) -> Option<String> {
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        match guard(&stmt, &placement()) {
            Guard::None => None,
            Guard::Guarded(s) => Some(s.to_string()),
            Guard::Refused(p) => Some(format!("{p:?}")),
        }
    }

    #[test]
    fn assignments_to_the_key_go_through_the_guard() {
        assert_eq!(
            guarded("UPDATE accounts SET balance = 1, id = $1 WHERE id = 7").unwrap(),
            "UPDATE accounts SET balance = 1, id = shardgate.unchanged_key($1, accounts.id, 'id of accounts') WHERE id = 7"
        );
        assert_eq!(
            guarded("UPDATE public.accounts AS a SET id = 7 + 0").unwrap(),
            "UPDATE public.accounts AS a SET id = shardgate.unchanged_key(7 + 0, a.id, 'id of public.accounts')"
        );
        assert_eq!(
            guarded("INSERT INTO accounts AS t (id, balance) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET id = excluded.id, balance = 3").unwrap(),
            "INSERT INTO accounts AS t (id, balance) VALUES (1, 2) ON CONFLICT(id) DO UPDATE SET id = shardgate.unchanged_key(excluded.id, t.id, 'id of accounts'), balance = 3"
        );
    }

    #[test]
    fn statements_that_leave_the_key_alone_are_not_guarded() {
        assert_eq!(
            guarded("UPDATE accounts SET balance = id WHERE id = 7"),
            None
        );
        assert_eq!(
            guarded(
                "INSERT INTO accounts (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET balance = 3"
            ),
            None
        );
        assert_eq!(
            guarded("INSERT INTO accounts (id) VALUES (1) ON CONFLICT DO NOTHING"),
            None
        );
        // A reference table's copies all take the same write.
        assert_eq!(guarded("UPDATE countries SET code = 'x'"), None);
    }

    #[test]
    fn what_cannot_be_guarded_is_refused() {
        for sql in [
            "UPDATE accounts SET (id, balance) = (SELECT 1, 2) WHERE id = 1",
            "UPDATE accounts SET id = DEFAULT WHERE id = 1",
            "INSERT INTO accounts (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET (id, balance) = (2, 3)",
        ] {
            assert!(guarded(sql).unwrap().contains("may not change the shard key"), "{sql}");
        }
    }
}
