//! Planning a read of several shards: what each shard runs (a pushed-down LIMIT, hidden sort
//! columns, partial aggregates) and how the proxy merges the answers (`MergeSpec`), or why it
//! cannot.

use super::*;

/// Renumbers the parameters `q` still uses as `$1, $2, ...` when a rewrite dropped some of the
/// `bound` ones (PostgreSQL refuses a Bind with more values than the statement uses); returns
/// which of the client's parameters to bind, or None when all are used.
pub(crate) fn keep_used_params<V>(q: &mut V, bound: usize) -> Option<Vec<usize>>
where
    V: sqlparser::ast::Visit + sqlparser::ast::VisitMut,
{
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        },
        _ => None,
    };
    let mut used = BTreeSet::new();
    let _ = sqlparser::ast::visit_expressions(&*q, |e: &Expr| {
        used.extend(number(e));
        ControlFlow::<()>::Continue(())
    });
    if used.len() == bound {
        return None;
    }
    let order: Vec<usize> = used.into_iter().collect();
    let _ = sqlparser::ast::visit_expressions_mut(q, |e: &mut Expr| {
        if let Some(n) = number(e) {
            if let (Expr::Value(v), Some(i)) = (&mut *e, order.iter().position(|&o| o == n)) {
                v.value = Value::Placeholder(format!("${}", i + 1));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Some(order.into_iter().map(|n| n - 1).collect())
}

/// `COLLATE "C"`, `"POSIX"` or `ucs_basic` on a sort expression: Some(true). Another explicit
/// collation: Some(false), which the merge cannot reproduce. None: no COLLATE.
pub(crate) fn explicit_collation(e: &Expr) -> Option<bool> {
    let Expr::Collate { collation, .. } = e else {
        return None;
    };
    let name = match collation.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        _ => collation.to_string(),
    };
    Some(matches!(
        name.to_ascii_lowercase().as_str(),
        "c" | "posix" | "ucs_basic"
    ))
}

/// The refusal of ORDER BY with a collation other than C over several shards.
pub(crate) fn other_collation(e: &Expr) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("ORDER BY {e} over several shards: the merge cannot order by that collation"),
    )
    .with_hint(
        "The merge orders text by code point: sort with COLLATE \"C\", or sort in the application.",
    )
}

/// PostgreSQL's own aggregate and window functions (15, and the names 16 adds). Those the
/// shards define beyond these are in `Placement::aggregates`, read from their catalogs.
pub(super) const BUILT_IN_AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "every",
    "first_value",
    "json_agg",
    "json_agg_strict",
    "json_arrayagg",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "json_objectagg",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "lag",
    "last_value",
    "lead",
    "max",
    "min",
    "mode",
    "nth_value",
    "ntile",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "row_number",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
];

/// Whether a call of `f` may combine rows: a window call, or a function whose name an
/// aggregate or window function has on the shards. By name alone, whatever the schema and
/// arguments, so a plain function sharing a name with an aggregate counts too: planning such a
/// call as an aggregate can only refuse, while missing an aggregate would hand the client one
/// partial result per shard.
pub(crate) fn may_combine_rows(f: &sqlparser::ast::Function, placement: &Placement) -> bool {
    if f.over.is_some() {
        return true;
    }
    let name = match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
        _ => return true,
    };
    BUILT_IN_AGGREGATES.binary_search(&name.as_str()).is_ok()
        || placement.aggregates.contains(&name)
}

/// Whether an aggregate or window call is anywhere in `node` (subqueries included).
pub(crate) fn has_aggregate_or_window<V: sqlparser::ast::Visit>(
    node: &V,
    placement: &Placement,
) -> bool {
    let found = sqlparser::ast::visit_expressions(node, |e: &Expr| match e {
        Expr::Function(f) if may_combine_rows(f, placement) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    found.is_break()
}

/// Whether the query's ORDER BY calls an aggregate or window function of its own level (a
/// tied subquery's `count(*)` is the subquery's).
fn orders_by_aggregate_or_window(q: &Query, select: &Select, placement: &Placement) -> bool {
    q.order_by.as_ref().is_some_and(|ob| match &ob.kind {
        OrderByKind::Expressions(exprs) => exprs.iter().any(|oe| {
            super::aggregate_level::has_own_aggregate_or_window(&oe.expr, select, placement)
        }),
        _ => false,
    })
}

pub(super) fn plan_scatter(
    q: &Query,
    select: &Select,
    shards: Vec<usize>,
    params: &Params,
    placement: &Placement,
) -> Plan {
    // Hibernate writes `OFFSET ? ROWS FETCH FIRST ? ROWS ONLY`: PostgreSQL's executor reads
    // FETCH FIRST as LIMIT (a NULL count included), so it is planned as one. WITH TIES keeps
    // the rows tied with the last, which the merge does not.
    if let Some(fetch) = &q.fetch {
        if fetch.with_ties || fetch.percent {
            return refuse(
                "FETCH FIRST ... WITH TIES over several shards is not supported",
                "Use LIMIT, or ORDER BY columns that make the order total.",
            );
        }
        let count = fetch
            .quantity
            .clone()
            .unwrap_or_else(|| Expr::value(sqlparser::ast::Value::Number("1".into(), false)));
        let mut limited = q.clone();
        limited.fetch = None;
        // The parser reads `LIMIT ALL` as no limit at all, so `LIMIT ALL ... FETCH ...` (two
        // limits, which PostgreSQL refuses) is read as the FETCH alone.
        match &mut limited.limit_clause {
            None => {
                limited.limit_clause = Some(sqlparser::ast::LimitClause::LimitOffset {
                    limit: Some(count),
                    offset: None,
                    limit_by: Vec::new(),
                })
            }
            Some(sqlparser::ast::LimitClause::LimitOffset {
                limit: limit @ None,
                ..
            }) => *limit = Some(count),
            Some(_) => {
                return refuse(
                    "FETCH FIRST beside LIMIT is not supported",
                    "Write OFFSET n ROWS FETCH FIRST m ROWS ONLY, or LIMIT m OFFSET n.",
                )
            }
        }
        return plan_scatter(&limited, select, shards, params, placement);
    }
    if let Some(numbered) = super::numbering::numbered(q, select) {
        let (rewritten, numbers) = match numbered {
            Ok(n) => n,
            Err(refusal) => return super::windows::read_first(q, placement).unwrap_or(*refusal),
        };
        let SetExpr::Select(s) = rewritten.body.as_ref() else {
            return refuse(
                "numbering windows here are not supported",
                "Add a shard-key condition.",
            );
        };
        return match plan_scatter(&rewritten, s, shards, params, placement) {
            Plan::Scatter {
                shards,
                sql,
                mut merge,
            } if merge.aggregate.is_none() && merge.distinct_on == 0 => {
                merge.numbers = numbers;
                Plan::Scatter { shards, sql, merge }
            }
            // Numbered after the shards aggregate: one server numbers the rows read first.
            Plan::Scatter { .. } => super::windows::read_first(q, placement).unwrap_or_else(|| {
                refuse(
                    "row_number(), rank() or dense_rank() over grouped, DISTINCT or DISTINCT ON rows over several shards is not supported",
                    "Add a shard-key condition so the query runs on one shard.",
                )
            }),
            other => other,
        };
    }
    // Windows partitioned by the shard key come back final from each shard, as plain rows.
    let windows = has_window(&select.projection) || has_window_in_order(q);
    let mut totals = Vec::new();
    if windows {
        if let Some(refusal) = super::windows::refusal(q, select, placement) {
            return refusal;
        }
        totals =
            match super::windows::totals(select) {
                Some(t) => t,
                None => return refuse(
                    "count(...) OVER () between two * items over several shards is not supported",
                    "Put the count before or after every * in the select list.",
                ),
            };
    }
    let distinct_on = match &select.distinct {
        Some(sqlparser::ast::Distinct::On(exprs)) => Some(exprs),
        _ => None,
    };
    // With windows, `windows::refusal` has refused grouping and aggregates already.
    let grouped = !windows
        && (matches!(select.distinct, Some(sqlparser::ast::Distinct::Distinct))
            || !matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
            || select.having.is_some()
            || super::aggregate_level::has_own_aggregate_or_window(
                &select.projection,
                select,
                placement,
            )
            || orders_by_aggregate_or_window(q, select, placement));
    // Grouped by a shard key (or DISTINCT over one), each shard holds whole groups: its rows
    // are final, and only their order and LIMIT are merged, as for plain rows.
    if grouped && !crate::router::subquery::grouped_by_key(q, placement) {
        return match limit_and_offset(q, params) {
            Ok((limit, offset)) => crate::router::aggregate::plan_aggregate(
                q, select, shards, limit, offset, params, placement,
            ),
            Err(p) => *p,
        };
    }
    let mut merge = MergeSpec {
        totals,
        ..MergeSpec::default()
    };
    let mut rewritten = q.clone();
    let mut changed = false;
    let has_wildcard = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let mut hidden_items: Vec<SelectItem> = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return refuse("ORDER BY ALL is not supported", "List the sort columns.");
        };
        for oe in exprs {
            let (descending, nulls_first) = match sort_direction(oe) {
                Ok(d) => d,
                Err(p) => return *p,
            };
            if explicit_collation(&oe.expr) == Some(false) {
                return Plan::Reject(other_collation(&oe.expr));
            }
            let sorted = sort_column(&oe.expr, &select.projection);
            let column = match sorted {
                Some(Ok(SortColumn::Name(n))) if has_wildcard => SortColumn::Name(n),
                Some(Ok(SortColumn::Position(p))) => SortColumn::Position(p),
                _ => {
                    // Not among the client's columns, or behind a `*`: the shards return it
                    // after them (an item's own expression, which its alias stands for).
                    let expr = match sorted {
                        Some(Err(item)) => *item,
                        _ => oe.expr.clone(),
                    };
                    let alias = Ident::new(format!("__shardgate_sort_{}", hidden_items.len()));
                    hidden_items.push(SelectItem::ExprWithAlias { expr, alias });
                    if has_wildcard {
                        SortColumn::Name(format!("__shardgate_sort_{}", hidden_items.len() - 1))
                    } else {
                        SortColumn::Position(select.projection.len() + hidden_items.len())
                    }
                }
            };
            // PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC.
            merge.order.push(SortKey {
                column,
                descending,
                nulls_first,
                bytewise: explicit_collation(&oe.expr) == Some(true),
            });
        }
    }
    if !merge.totals.is_empty() {
        merge
            .order
            .retain(|k| !super::windows::sorts_by_total(select, k));
    }
    if let Some(exprs) = distinct_on {
        // PostgreSQL asks the same of DISTINCT ON with ORDER BY; without one, which row of a
        // value it keeps is up to each shard, and the merge could not pick as one server does.
        let leading: Vec<String> = match &q.order_by {
            Some(ob) => match &ob.kind {
                OrderByKind::Expressions(o) => o
                    .iter()
                    .take(exprs.len())
                    .map(|oe| item_text(&oe.expr, &select.projection))
                    .collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let mut on: Vec<String> = exprs
            .iter()
            .map(|e| item_text(e, &select.projection))
            .collect();
        let mut leading_sorted = leading.clone();
        on.sort();
        leading_sorted.sort();
        if on != leading_sorted {
            return refuse(
                "DISTINCT ON over several shards needs an ORDER BY that starts with its expressions",
                "Order by the DISTINCT ON expressions first, then by what picks the row to keep.",
            );
        }
        merge.distinct_on = exprs.len();
    }
    if !hidden_items.is_empty() {
        merge.hidden = hidden_items.len();
        if let SetExpr::Select(sel) = rewritten.body.as_mut() {
            sel.projection.extend(hidden_items);
        }
        changed = true;
    }
    if let Some(LimitClause::LimitOffset { limit_by, .. }) = &q.limit_clause {
        if !limit_by.is_empty() {
            return refuse("LIMIT BY is not supported", "Use LIMIT.");
        }
        (merge.limit, merge.offset) = match limit_and_offset(q, params) {
            Ok(both) => both,
            Err(refusal) => return *refusal,
        };
        // Each shard returns at most offset + limit rows; the merge applies both again.
        rewritten.limit_clause = pushed_limit_clause(merge.limit, merge.offset);
        changed = true;
    } else if q.limit_clause.is_some() {
        return refuse(
            "this LIMIT form is not supported over several shards",
            "Use LIMIT n OFFSET m.",
        );
    }
    let sql = if changed {
        merge.picks = keep_used_params(&mut rewritten, params.values.len());
        rewritten.to_string()
    } else {
        q.to_string()
    };
    Plan::Scatter { shards, sql, merge }
}

pub(super) fn calls_set_config(q: &Query) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(q, |e: &Expr| {
        if let Expr::Function(f) = e {
            if last_ident(&f.name).eq_ignore_ascii_case("set_config") {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

pub(super) fn has_window(items: &[SelectItem]) -> bool {
    let mut found = false;
    for item in items {
        let _ = sqlparser::ast::visit_expressions(item, |e: &Expr| {
            if matches!(e, Expr::Function(f) if f.over.is_some()) {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
    }
    found
}

/// Whether the query's ORDER BY holds a window call: each shard would number its own rows.
fn has_window_in_order(q: &Query) -> bool {
    let found = q.order_by.as_ref().map(|ob| {
        sqlparser::ast::visit_expressions(&ob.kind, |e: &Expr| match e {
            Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
    });
    found.is_some_and(|f| f.is_break())
}

/// A LIMIT or OFFSET count: a literal, or a bound parameter in text or binary format.
pub(super) fn count_constant(e: &Expr, params: &Params) -> Option<u64> {
    match super::super::keys::strip_for(e, KeyType::Integer) {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            Value::Placeholder(p) => params
                .constant(p.strip_prefix('$')?.parse().ok()?)?
                .parse()
                .ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The limit clause the shards get for the merge's LIMIT and OFFSET: no OFFSET, and
/// `pushed_limit` rows.
pub(super) fn pushed_limit_clause(limit: Option<u64>, offset: u64) -> Option<LimitClause> {
    limit.map(|l| LimitClause::LimitOffset {
        limit: Some(Expr::value(Value::Number(
            pushed_limit(l, offset).to_string(),
            false,
        ))),
        offset: None,
        limit_by: vec![],
    })
}

/// The LIMIT each shard gets: enough rows for the merge's OFFSET and LIMIT. PostgreSQL's
/// limits are bigints: a sum beyond one is as good as no limit, while a limit or offset that is
/// itself beyond one goes to the shards as it is, for them to refuse as one server would.
fn pushed_limit(limit: u64, offset: u64) -> u64 {
    const MAX: u64 = i64::MAX as u64;
    if limit > MAX || offset > MAX {
        limit.max(offset)
    } else {
        (limit + offset).min(MAX)
    }
}

/// Constant LIMIT and OFFSET (literals or bound parameters). `LIMIT NULL` is no limit and
/// `OFFSET NULL` none, as PostgreSQL reads them.
pub(super) fn limit_and_offset(
    q: &Query,
    params: &Params,
) -> Result<(Option<u64>, u64), Box<Plan>> {
    let num = |e: &Expr| count_constant(e, params);
    let null = |e: &Expr| matches!(e, Expr::Value(v) if v.value == Value::Null);
    match &q.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = match limit {
                None => None,
                Some(e) if null(e) => None,
                Some(e) => Some(num(e).ok_or_else(|| {
                    Box::new(refuse(
                        "LIMIT over several shards must be a constant",
                        "Use a literal LIMIT, or a bound parameter.",
                    ))
                })?),
            };
            let offset = match offset {
                None => 0,
                Some(o) if null(&o.value) => 0,
                Some(o) => num(&o.value).ok_or_else(|| {
                    Box::new(refuse(
                        "OFFSET over several shards must be a constant",
                        "Use a literal OFFSET.",
                    ))
                })?,
            };
            Ok((limit, offset))
        }
        Some(_) => Err(Box::new(refuse(
            "this LIMIT form is not supported over several shards",
            "Use LIMIT n OFFSET m.",
        ))),
    }
}

/// ASC/DESC and where NULLs go (PostgreSQL's default: last for ASC, first for DESC).
pub(crate) fn sort_direction(oe: &sqlparser::ast::OrderByExpr) -> Result<(bool, bool), Box<Plan>> {
    let descending = match oe.options.sort {
        None | Some(OrderBySort::Asc) => false,
        Some(OrderBySort::Desc) => true,
        Some(OrderBySort::Using(_)) => {
            return Err(Box::new(refuse(
                "ORDER BY ... USING over several shards is not supported",
                "Use ASC or DESC.",
            )))
        }
    };
    Ok((descending, oe.options.nulls_first.unwrap_or(descending)))
}

/// What an ORDER BY key sorts on, as PostgreSQL resolves it: a position; a bare name first
/// among the output columns' names (aliases, and the names items get without one); then an
/// expression the select list holds. `Err(expr)`: a select item after a `*`, whose position
/// the plan cannot know: the shards return `expr` again as a hidden column. None: not among
/// the client's columns.
pub(super) fn sort_column(
    e: &Expr,
    projection: &[SelectItem],
) -> Option<Result<SortColumn, Box<Expr>>> {
    if let Expr::Value(v) = e {
        if let Value::Number(n, _) = &v.value {
            return n
                .parse()
                .ok()
                .filter(|p| *p >= 1)
                .map(|p| Ok(SortColumn::Position(p)));
        }
    }
    let items: Vec<(usize, &Expr, Option<&Ident>)> = projection
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            SelectItem::UnnamedExpr(expr) => Some((i, expr, None)),
            SelectItem::ExprWithAlias { expr, alias } => Some((i, expr, Some(alias))),
            _ => None,
        })
        .collect();
    let found = |i: usize, expr: &Expr| {
        let after_wildcard = projection[..i].iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        if after_wildcard {
            Err(Box::new(expr.clone()))
        } else {
            Ok(SortColumn::Position(i + 1))
        }
    };
    if let Expr::Identifier(id) = e {
        if let Some(&(i, expr, _)) = items
            .iter()
            .find(|(_, _, alias)| alias.is_some_and(|a| a.value == id.value))
        {
            return Some(found(i, expr));
        }
        if let Some(n) = named_output(id, items.iter().map(|&(_, expr, alias)| (expr, alias))) {
            let (i, expr, _) = items[n];
            return Some(found(i, expr));
        }
    }
    let text = e.to_string();
    if let Some(&(i, expr, _)) = items.iter().find(|(_, expr, _)| expr.to_string() == text) {
        return Some(found(i, expr));
    }
    // A plain column (possibly behind `*`): found by name in the result's RowDescription.
    match e {
        Expr::Identifier(i) => Some(Ok(SortColumn::Name(column_name(i)))),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map(|i| Ok(SortColumn::Name(column_name(i))))
        }
        _ => None,
    }
}

/// The select item (0-based) a bare ORDER BY or DISTINCT ON name means by the name PostgreSQL
/// gave it without an alias: `SELECT qty::text ... ORDER BY qty` sorts the text, since
/// PostgreSQL looks such a name up among the output columns before the input ones. None when
/// no unaliased item is named so (an alias is matched by the caller).
pub(crate) fn named_output<'a>(
    id: &Ident,
    items: impl Iterator<Item = (&'a Expr, Option<&'a Ident>)>,
) -> Option<usize> {
    let wanted = column_name(id);
    items
        .enumerate()
        .find(|(_, (expr, alias))| {
            alias.is_none()
                && crate::router::computed::output_name(expr).is_some_and(|n| n == wanted)
        })
        .map(|(i, _)| i)
}

pub(crate) fn column_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// The text of what an ORDER BY or DISTINCT ON item stands for: the select item it names by
/// position (`ORDER BY 1`, as Django writes it), output name or expression, as `sort_column`
/// resolves a sort key, else itself. PostgreSQL reads both lists by these rules, and matches
/// DISTINCT ON against ORDER BY after them.
fn item_text(e: &Expr, projection: &[SelectItem]) -> String {
    let item = match sort_column(e, projection) {
        // Not after a `*`, whose width only the shards know.
        Some(Ok(SortColumn::Position(p))) if p <= projection.len() => projection[..p]
            .iter()
            .map(|i| match i {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|items| items.last().copied()),
        _ => None,
    };
    item.unwrap_or(e).to_string()
}
