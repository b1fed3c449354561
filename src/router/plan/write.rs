//! Planning writes: INSERT (split by the shard of each row's key), UPDATE and DELETE (by the
//! keys their WHERE pins), INSERT ... SELECT, and writes of reference tables, which go to every
//! shard. A write that reaches several shards is a `Plan::Write`, one distributed transaction.

use super::*;
use crate::router::subquery::PerRow;

/// The same statement on every shard (a reference table keeps a full copy on each; `sum` is
/// false for one).
pub(super) fn on_every_shard(placement: &Placement, stmt: &Statement, sum: bool) -> Plan {
    let text = stmt.to_string();
    match written_table(stmt).filter(|_| !sum) {
        Some(table) => on_every_copy(placement, &text, &table),
        None => Plan::Write {
            parts: (0..placement.shard_names.len())
                .map(|s| (s, text.clone()))
                .collect(),
            sum,
            picks: Vec::new(),
            serialize: None,
            row_order: Vec::new(),
        },
    }
}

/// `text` on every shard as a write of reference table `table`, whose writers take turns: the
/// client gets one copy's answer.
pub(super) fn on_every_copy(placement: &Placement, text: &str, table: &str) -> Plan {
    Plan::Write {
        parts: (0..placement.shard_names.len())
            .map(|s| (s, text.to_string()))
            .collect(),
        sum: false,
        picks: Vec::new(),
        serialize: Some(table.to_string()),
        row_order: Vec::new(),
    }
}

/// The table an INSERT, UPDATE or DELETE (or EXPLAIN of one) writes, as its writers lock it.
pub(super) fn written_table(stmt: &Statement) -> Option<String> {
    target(stmt).map(|n| last_ident(n).to_lowercase())
}

/// The table an INSERT, UPDATE or DELETE (or EXPLAIN of one) writes.
pub(super) fn target(stmt: &Statement) -> Option<&ObjectName> {
    match stmt {
        Statement::Insert(ins) => match &ins.table {
            TableObject::TableName(n) => Some(n),
            _ => None,
        },
        Statement::Update(up) => match &up.table.relation {
            TableFactor::Table { name, .. } => Some(name),
            _ => None,
        },
        Statement::Delete(del) => match &del.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                match t.first().map(|t| &t.relation) {
                    Some(TableFactor::Table { name, .. }) => Some(name),
                    _ => None,
                }
            }
        },
        Statement::Explain { statement, .. } => target(statement),
        _ => None,
    }
}

/// The refusal of a write that reads a sharded table beyond its rows; the executor answers
/// such a read first when it names nothing of the statement (`executor::write_subqueries`).
pub(crate) const READS_BEYOND_ITS_ROWS: &str = "a write that reads a sharded table beyond the rows it writes is not supported: each shard would read only its own rows of it";

/// Why a write cannot run as written where it goes: besides the rows it writes, it reads a
/// sharded table (in a subquery of its WHERE, SET, VALUES, ON CONFLICT or RETURNING) other than
/// through a subquery of `tied_at` (an UPDATE's or DELETE's WHERE, an UPDATE's SET values) tied
/// to the written sharded table by the shard key. Each shard would read only its own rows of
/// that table and write by its partial answer; every copy of a reference table by a different
/// one. `target`: the written table when it is sharded; `joined`: the sharded tables of an
/// UPDATE's FROM or a DELETE's USING joined to it by the key (see `joined_to_write`).
fn reads_beyond_its_rows<V: sqlparser::ast::Visit>(
    read: &V,
    target: Option<&crate::router::subquery::TopTable>,
    joined: usize,
    tied_at: &[PerRow],
    placement: &Placement,
) -> Option<Plan> {
    let sharded = relations(read, placement).sharded.len();
    let own = usize::from(target.is_some()) + joined;
    if sharded <= own {
        return None;
    }
    let tied = match target {
        Some(t) => {
            match crate::router::subquery::tied_in(
                tied_at.iter().copied(),
                std::slice::from_ref(t),
                placement,
            ) {
                Ok(n) => n,
                Err(refusal) => return Some(*refusal),
            }
        }
        None => 0,
    };
    if own.checked_add(tied) == Some(sharded) {
        return None;
    }
    Some(refuse(
        READS_BEYOND_ITS_ROWS,
        "In a write, a subquery over a sharded table must be in WHERE or SET and tied to the \
         written table by the shard key: EXISTS (... WHERE inner.key = outer.key), (SELECT ... \
         WHERE inner.key = outer.key) or key IN (SELECT inner.key ...). Otherwise read the \
         values first, then write them.",
    ))
}

/// An UPDATE or DELETE of `name`; `joined` sharded tables of its FROM or USING are joined to
/// it by the key (see `joined_to_write`).
pub(super) fn plan_write_where(
    name: &ObjectName,
    alias: Option<&Ident>,
    joined: usize,
    selection: Option<&Expr>,
    placement: &Placement,
    params: &Params,
    stmt: &Statement,
) -> Plan {
    let verb = match stmt {
        Statement::Update(_) => "UPDATE",
        _ => "DELETE",
    };
    match placement.rule(&name.to_string()) {
        Some(TableRule::Reference) => reads_beyond_its_rows(stmt, None, 0, &[], placement)
            .or_else(|| super::copies::check_reads(&name.to_string(), stmt, placement))
            .or_else(|| super::copies::check_rows(&name.to_string(), stmt))
            .or_else(|| super::copies::check_write(&name.to_string(), stmt))
            .unwrap_or_else(|| on_every_shard(placement, stmt, false)),
        Some(TableRule::Pinned { shard }) => on_pinned_shard(stmt, placement, *shard, true),
        None if is_catalog_relation(&name.to_string()) => refuse(
            format!("{verb} of catalog {name} through shardgate"),
            "Run it on each shard directly.",
        ),
        None => undeclared(&name.to_string()),
        Some(TableRule::Sharded {
            key_column,
            key_type,
        }) => {
            let mut names = vec![last_ident(name)];
            if let Some(a) = alias {
                names.push(a.value.clone());
            }
            let target = (names.clone(), *key_type, key_column.clone());
            // Django's update(x=Subquery(...)) sets a row from its own children.
            let mut tied_at: Vec<PerRow> = selection.into_iter().map(|e| (e, true)).collect();
            if let Statement::Update(u) = stmt {
                tied_at.extend(u.assignments.iter().map(|a| (&a.value, false)));
            }
            if let Some(refusal) =
                reads_beyond_its_rows(stmt, Some(&target), joined, &tied_at, placement)
            {
                return refusal;
            }
            let is_key = |e: &Expr| is_column(e, &names, key_column);
            let keys = match selection {
                None => KeySet::Any,
                Some(w) => match keys_in(w, &is_key, *key_type, params) {
                    Ok(k) => k,
                    Err(e) => return Plan::Reject(crate::router::keys::bad_key(e)),
                },
            };
            let one_shard =
                matches!(&keys, KeySet::Values(vs) if shards_for(placement, vs).len() <= 1);
            if let Some(column) = selection.and_then(system_column).filter(|_| !one_shard) {
                return refuse(
                    format!("{verb} by the system column {column} over several shards is not supported: every shard has rows with the same {column}"),
                    "Name the rows by their key (add a shard-key condition), or by a primary key.",
                );
            }
            match keys {
                KeySet::Values(vs) => match shards_for(placement, &vs).as_slice() {
                    [] => Plan::Shard {
                        shard: HOME,
                        write: true,
                    },
                    [one] => Plan::Shard {
                        shard: *one,
                        write: true,
                    },
                    several => {
                        let text = stmt.to_string();
                        Plan::Write {
                            parts: several.iter().map(|&s| (s, text.clone())).collect(),
                            sum: true,
                            picks: Vec::new(),
                            serialize: None,
                            row_order: Vec::new(),
                        }
                    }
                },
                KeySet::Any => on_every_shard(placement, stmt, true),
            }
        }
    }
}

/// How many sharded tables an UPDATE ... FROM or DELETE ... USING of `target` (seen as
/// `alias`) joins to it by the key; Err: why it cannot run where its table's rows are. Over
/// reference tables only, each shard joins its own rows of a sharded table to its full copy,
/// as one server would join them all. Sharded tables of FROM, each a plain table, whose keys
/// equal the written table's through equalities of WHERE and the joins' ON (as co-located
/// tables of a read, `colocation_problem`): every row a written row can meet has its key, so
/// lives on its shard, and the shard picks among the same rows one server would. Refused:
/// other sharded or undeclared tables in FROM (their rows are elsewhere), and any FROM on a
/// written reference table, since when several FROM rows match one row PostgreSQL picks one
/// of them, and each copy could pick another.
pub(super) fn joined_to_write(
    target: &ObjectName,
    alias: Option<&Ident>,
    joins: &[sqlparser::ast::Join],
    from: &[TableWithJoins],
    selection: Option<&Expr>,
    placement: &Placement,
) -> Result<usize, Box<Plan>> {
    if joins.is_empty() && from.is_empty() {
        return Ok(0);
    }
    let joined = if !joins.is_empty() {
        None
    } else {
        match placement.rule(&target.to_string()) {
            Some(TableRule::Sharded {
                key_column,
                key_type,
            }) => {
                if relations(&from.to_vec(), placement).only_reference() {
                    Some(0)
                } else {
                    let mut names = vec![last_ident(target)];
                    names.extend(alias.map(|a| a.value.clone()));
                    colocated_from(
                        (names, *key_type, key_column.clone()),
                        from,
                        selection,
                        placement,
                    )
                }
            }
            // On its one shard, with whatever else lives there (`on_pinned_shard` judges).
            Some(TableRule::Pinned { .. }) => Some(0),
            // Refused by `plan_write_where` for what the table is.
            None => Some(0),
            Some(TableRule::Reference) => None,
        }
    };
    joined.ok_or_else(|| Box::new(refuse(
        format!("UPDATE ... FROM or DELETE ... USING of {target} over these tables is not supported on several shards"),
        "FROM or USING may name reference tables, and sharded tables joined to the written one by the shard key (WHERE t.key = other.key). Otherwise use a subquery in WHERE tied by the shard key (key IN (SELECT ...)), or read the values first.",
    )))
}

/// The number of sharded tables in `from` when each FROM item is a plain table and the
/// sharded ones are joined to `target` by their keys; None otherwise.
fn colocated_from(
    target: crate::router::subquery::TopTable,
    from: &[TableWithJoins],
    selection: Option<&Expr>,
    placement: &Placement,
) -> Option<usize> {
    let mut top = vec![target];
    for twj in from {
        for f in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if !matches!(f, TableFactor::Table { args: None, .. }) {
                return None;
            }
            top.extend(crate::router::subquery::sharded_table(f, placement));
        }
    }
    super::query::colocation_problem_of(selection, from, &top)
        .is_none()
        .then(|| top.len() - 1)
}

/// A system column the condition names (`ctid`, `xmin` ...): a row's place or transaction on
/// its own server, which rows of other shards share.
pub(super) fn system_column<V: sqlparser::ast::Visit>(condition: &V) -> Option<String> {
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(condition, |e: &Expr| {
        let name = match e {
            Expr::Identifier(i) => Some(&i.value),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
            _ => None,
        };
        match name.map(|n| n.to_ascii_lowercase()) {
            Some(n)
                if ["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"].contains(&n.as_str()) =>
            {
                found = Some(n);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    });
    found
}

pub(crate) fn undeclared(name: &str) -> Plan {
    refuse(
        format!("table {name} is not declared, and this cluster has several shards"),
        format!("Declare it in the config as [tables.{name}] with shard_key and key_type, or with reference = true, and reload the proxy (SIGHUP)."),
    )
}

pub(super) fn plan_insert(
    ins: &sqlparser::ast::Insert,
    placement: &Placement,
    params: &Params,
) -> Plan {
    let TableObject::TableName(name) = &ins.table else {
        return refuse(
            "INSERT into a table function is not supported",
            "Insert into a table.",
        );
    };
    match placement.rule(&name.to_string()) {
        Some(TableRule::Reference) => {
            let stmt = Statement::Insert(ins.clone());
            reads_beyond_its_rows(ins, None, 0, &[], placement)
                .or_else(|| super::copies::check_reads(&name.to_string(), ins, placement))
                .or_else(|| super::copies::check_rows(&name.to_string(), &stmt))
                .or_else(|| super::copies::check_write(&name.to_string(), ins))
                .unwrap_or_else(|| on_every_shard(placement, &stmt, false))
        }
        Some(TableRule::Pinned { shard }) => on_pinned_shard(ins, placement, *shard, true),
        None => undeclared(&name.to_string()),
        Some(TableRule::Sharded {
            key_column,
            key_type,
        }) => {
            if let Some(refusal) = super::conflict_target::refusal(ins, name, key_column) {
                return refusal;
            }
            // ON CONFLICT and RETURNING run on each row's shard; a SELECT source is read first
            // (see `plan_insert_select`), VALUES run there too.
            let target = (vec![last_ident(name)], *key_type, key_column.clone());
            let mut rest = ins.clone();
            if !matches!(
                ins.source.as_deref().map(|s| s.body.as_ref()),
                Some(SetExpr::Values(_))
            ) {
                rest.source = None;
            }
            if let Some(refusal) = reads_beyond_its_rows(&rest, Some(&target), 0, &[], placement) {
                return refusal;
            }
            let Some(source) = &ins.source else {
                return refuse(
                    "INSERT without VALUES is not supported on a sharded table",
                    "Use INSERT ... VALUES.",
                );
            };
            let SetExpr::Values(values) = source.body.as_ref() else {
                return plan_insert_select(
                    ins, name, source, key_column, *key_type, placement, params,
                );
            };
            if ins.columns.is_empty() {
                return refuse(
                    format!("INSERT into sharded table {name} needs a column list"),
                    format!("Name the columns, including the shard key {key_column}: INSERT INTO {name} ({key_column}, ...) VALUES ..."),
                );
            }
            let Some(key_idx) = ins
                .columns
                .iter()
                .position(|c| last_ident(c).eq_ignore_ascii_case(key_column))
            else {
                return refuse(
                    format!("INSERT into sharded table {name} must give the shard key {key_column}"),
                    "The shard key decides where the row lives. A key from a sequence (serial, bigserial, GENERATED BY DEFAULT AS IDENTITY on an integer key) is filled in by shardgate; other defaults could collide across shards.",
                );
            };
            // Each row's shard; a NULL key goes home, where the table's constraints judge it as
            // PostgreSQL would.
            let mut row_shards = Vec::with_capacity(values.rows.len());
            for row in &values.rows {
                let Some(e) = row.get(key_idx) else {
                    return Plan::Reject(PgError::error(
                        "42601",
                        "INSERT has more target columns than expressions",
                    ));
                };
                match literal_key(e, *key_type, params) {
                    Ok(Some(Some(k))) => row_shards.push(placement.shard_of(&k)),
                    Ok(Some(None)) => row_shards.push(HOME),
                    Ok(None) => {
                        return refuse(
                            format!("the shard key {key_column} must be a constant or a parameter of its own type"),
                            "shardgate computes the shard from the value itself; pass it as a literal or $n of the key's type (an integer key as an integer, not a float or numeric).",
                        )
                    }
                    Err(e) => return Plan::Reject(crate::router::keys::bad_key(e)),
                }
            }
            let distinct: BTreeSet<usize> = row_shards.iter().copied().collect();
            match distinct.len() {
                0 => Plan::Shard {
                    shard: HOME,
                    write: true,
                },
                1 => Plan::Shard {
                    shard: row_shards[0],
                    write: true,
                },
                _ => split_insert(ins, &row_shards, &distinct),
            }
        }
    }
}

/// A multi-row INSERT whose rows belong on several shards: each shard gets only its own rows.
pub(super) fn split_insert(
    ins: &sqlparser::ast::Insert,
    row_shards: &[usize],
    shards: &BTreeSet<usize>,
) -> Plan {
    let mut picks = Vec::new();
    let parts = shards
        .iter()
        .map(|&shard| {
            let mut part = ins.clone();
            if let Some(source) = &mut part.source {
                if let SetExpr::Values(values) = source.body.as_mut() {
                    let rows = std::mem::take(&mut values.rows);
                    values.rows = rows
                        .into_iter()
                        .zip(row_shards)
                        .filter(|(_, s)| **s == shard)
                        .map(|(r, _)| r)
                        .collect();
                }
            }
            // Over the whole statement: ON CONFLICT and RETURNING may name parameters too.
            let mut part = Statement::Insert(part);
            picks.push(renumber_parameters(&mut part));
            (shard, part.to_string())
        })
        .collect();
    // Parameters only matter where the rows have some.
    if picks.iter().all(Vec::is_empty) {
        picks.clear();
    }
    // RETURNING rows come back in the client's row order, as from one server.
    let row_order = if ins.returning.is_some() {
        let index: Vec<usize> = shards.iter().copied().collect();
        row_shards
            .iter()
            .map(|s| index.iter().position(|x| x == s).unwrap_or(0))
            .collect()
    } else {
        Vec::new()
    };
    Plan::Write {
        parts,
        sum: true,
        picks,
        serialize: None,
        row_order,
    }
}

/// Numbers the parameters of a shard's part of a split INSERT `$1, $2, ...` in order of first
/// use, so that a shard sees only parameters its rows (and its ON CONFLICT and RETURNING) use:
/// PostgreSQL cannot type a parameter nothing mentions. Returns the client's parameter
/// (0-based) behind each new number.
pub(super) fn renumber_parameters(part: &mut Statement) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    let _ = sqlparser::ast::visit_expressions_mut(part, |e: &mut Expr| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    if n > 0 {
                        let i = match picked.iter().position(|&o| o == n - 1) {
                            Some(i) => i,
                            None => {
                                picked.push(n - 1);
                                picked.len() - 1
                            }
                        };
                        *p = format!("${}", i + 1);
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    picked
}

/// INSERT ... SELECT into a sharded table runs only where it is correct on one shard: the source
/// reads one shard, and the inserted key is a co-located source table's own shard key, so every
/// row it produces belongs on that same shard.
/// A source of no row, `SELECT NULL, ... LIMIT 0` with `columns` NULLs: what the executor puts
/// in place of an INSERT ... SELECT source it read and found empty, so that the statement
/// inserts nothing wherever it runs, binds no parameter, and is not read again.
pub(crate) fn no_rows(columns: usize) -> Option<Query> {
    let text = format!("SELECT {} LIMIT 0", vec!["NULL"; columns.max(1)].join(", "));
    match sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &text)
        .ok()?
        .pop()?
    {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

/// Whether `source` is `no_rows`'s.
fn is_no_rows(source: &Query) -> bool {
    let SetExpr::Select(s) = source.body.as_ref() else {
        return false;
    };
    s.from.is_empty()
        && source.with.is_none()
        && s.projection
            .iter()
            .all(|i| matches!(i, SelectItem::UnnamedExpr(Expr::Value(v)) if v.value == Value::Null))
        && matches!(&source.limit_clause, Some(LimitClause::LimitOffset {
            limit: Some(Expr::Value(v)), offset: None, ..
        }) if v.value == Value::Number("0".into(), false))
}

pub(super) fn plan_insert_select(
    ins: &sqlparser::ast::Insert,
    name: &ObjectName,
    source: &Query,
    key_column: &str,
    key_type: KeyType,
    placement: &Placement,
    params: &Params,
) -> Plan {
    // Inserts nothing: one shard answers with the right description and `INSERT 0 0`.
    if is_no_rows(source) {
        return Plan::Shard {
            shard: HOME,
            write: true,
        };
    }
    let refused = || {
        refuse(
            format!("INSERT ... SELECT into sharded table {name} must read one shard and insert that shard's own keys"),
            format!("Select from a table sharded like {name} with a condition on its shard key, and insert its shard key as {key_column}; otherwise rows would land on the wrong shard."),
        )
    };
    let SetExpr::Select(select) = source.body.as_ref() else {
        return refused();
    };
    let Some(key_idx) = ins
        .columns
        .iter()
        .position(|c| last_ident(c).eq_ignore_ascii_case(key_column))
    else {
        return refused();
    };
    let key_expr = match select.projection.get(key_idx) {
        Some(SelectItem::UnnamedExpr(e)) | Some(SelectItem::ExprWithAlias { expr: e, .. }) => {
            super::super::keys::strip_for(e, key_type)
        }
        _ => return refused(),
    };
    // The key must be a sharded source table's key column of the same type.
    let own_key = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .any(|f| {
            let TableFactor::Table {
                name: src,
                alias,
                args: None,
                ..
            } = f
            else {
                return false;
            };
            match placement.rule(&src.to_string()) {
                Some(TableRule::Sharded {
                    key_column: k,
                    key_type: t,
                }) if *t == key_type => {
                    let mut names = vec![last_ident(src)];
                    if let Some(a) = alias {
                        names.push(a.name.value.clone());
                    }
                    is_column(key_expr, &names, k)
                }
                _ => false,
            }
        });
    match plan_query(source, placement, params) {
        Plan::Shard { shard, .. } if own_key => Plan::Shard { shard, write: true },
        Plan::Reject(e) => Plan::Reject(e),
        _ => refused(),
    }
}
