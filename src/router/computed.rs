//! Select items that compute over merged aggregates and group columns: `round(avg(x), 2)`,
//! `count(*)::int`, `sum(a) / count(*)`, `max(x) - min(x)`, `owner || ': ' || count(*)`.
//!
//! No shard can compute such an item: its inputs are the totals across shards. So the item is
//! split into its parts, the aggregate calls and group expressions it reads, which the shards
//! return as hidden columns and the merge combines as any other; what is left, the template,
//! reads the parts as columns `__shardgate_c<n>` (n: the part's column) and is evaluated for
//! every group by one shard after the merge (`executor::merge::computed`), so PostgreSQL itself
//! does the arithmetic, casts and rounding. The shards' own column for the item is
//! `CASE WHEN false THEN item END` under the item's name: it has the item's type, and is never
//! evaluated (a shard's partial sums could divide by zero where the totals do not).
//!
//! The template may call only functions of their arguments alone (`sql::pure_functions`), and
//! may read no other column and no subquery: what one shard evaluates for every group must be
//! what each group's own server would. A bound parameter stays a parameter: the evaluation
//! binds the client's values again, ahead of the parts (see `executor::merge::computed`).

use super::params::Params;
use sqlparser::ast::Query;
use sqlparser::ast::{
    CaseWhen, DataType, Expr, Ident, ObjectNamePart, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

/// An item split for the merge.
#[derive(Debug)]
pub struct Computed {
    /// The expressions the template reads, in column order from the first part's column.
    pub parts: Vec<Expr>,
    /// The item with each part replaced by its column's name.
    pub template: String,
    /// What the shards return in the item's place: its type, never its value.
    pub stand_in: Expr,
    /// The column's name: the client's alias, or the one PostgreSQL would give the item.
    pub name: Ident,
    /// The client's parameters (`$n`, 1-based) the template reads, in order.
    pub params: Vec<usize>,
    /// The parts (indexes into `parts`) gathering values the template puts in an order of its
    /// own (see `router::gathered`), so the order the shards read rows in does not matter.
    pub reordered: Vec<usize>,
}

/// The name of part column `column` in a template.
pub fn part_name(column: usize) -> String {
    format!("__shardgate_c{column}")
}

/// Splits `item`, whose parts will take the columns from `first_column` on. Err: why the item
/// cannot be computed after the merge. An item with no parts is the caller's to judge: only a
/// literal may be computed so.
pub fn split(
    item: &Expr,
    alias: Option<&Ident>,
    group_texts: &[String],
    first_column: usize,
    (statement, params): (&Query, &Params),
    aggregate: &dyn Fn(&Expr) -> Result<bool, String>,
) -> Result<Computed, String> {
    let name = match alias {
        Some(a) => a.clone(),
        None => Ident::with_quote(
            '"',
            column_name(item).map(|(n, _)| n).ok_or_else(|| {
                format!("{item} over several shards needs a name: give it one with AS")
            })?,
        ),
    };
    let mut parts = Parts {
        aggregate,
        group_texts,
        statement,
        params,
        read: Vec::new(),
        first_column,
        found: Vec::new(),
        gathered: Vec::new(),
        problem: None,
    };
    let mut template = item.clone();
    super::variance::written_over_sums(&mut template);
    let _ = template.visit(&mut parts);
    if let Some(problem) = parts.problem {
        return Err(problem);
    }
    if let Some(what) = unfit(&template) {
        return Err(format!(
            "{item} over several shards is not supported: computing it after the merge would read {what}"
        ));
    }
    // Checked above as the names standing for them; what replaces them reads only parts.
    let mut reordered = Vec::new();
    let mut evaluated = Vec::with_capacity(parts.gathered.len());
    for (first, g) in &parts.gathered {
        let at = first - first_column;
        if g.ordered {
            reordered.extend(at..at + g.parts.len());
        }
        let columns: Vec<String> = (*first..first + g.parts.len()).map(part_name).collect();
        evaluated.push(g.evaluated(&columns)?);
    }
    let _ = template.visit(&mut Evaluated(evaluated));
    Ok(Computed {
        parts: parts.found,
        template: template.to_string(),
        stand_in: never_evaluated(item),
        name,
        params: parts.read,
        reordered,
    })
}

/// The name standing for gathered call `n` in a template until it is evaluated.
fn gathered_name(n: usize) -> String {
    format!("__shardgate_g{n}")
}

/// Puts each gathered call's evaluation where its name stands.
struct Evaluated(Vec<Expr>);

impl VisitorMut for Evaluated {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Identifier(i) = e {
            let n = i.value.strip_prefix("__shardgate_g");
            if let Some(evaluated) = n
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| self.0.get(n))
            {
                *e = evaluated.clone();
            }
        }
        ControlFlow::Continue(())
    }
}

/// `CASE WHEN false THEN item END`: the item's type, checked as the item is when the statement
/// is analysed (a column neither grouped nor aggregated is still an error), and folded away by
/// the planner before any row, so never evaluated.
pub(crate) fn never_evaluated(item: &Expr) -> Expr {
    Expr::Case {
        case_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        end_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        operand: None,
        conditions: vec![CaseWhen {
            condition: Expr::Value(ValueWithSpan::from(Value::Boolean(false))),
            result: item.clone(),
        }],
        else_result: None,
    }
}

/// Replaces, outermost first, every supported aggregate call and group expression by the name
/// of the column that will hold it.
struct Parts<'a> {
    /// Whether an expression is a call of an aggregate the merge combines; Err: one of its
    /// forms the merge refuses.
    aggregate: &'a dyn Fn(&Expr) -> Result<bool, String>,
    group_texts: &'a [String],
    statement: &'a Query,
    params: &'a Params,
    read: Vec<usize>,
    first_column: usize,
    found: Vec<Expr>,
    /// The calls answered over gathered values, with the column of their first part.
    gathered: Vec<(usize, crate::router::gathered::Gathered)>,
    problem: Option<String>,
}

impl VisitorMut for Parts<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
        {
            return self.read_param(&p.clone());
        }
        if let Some(g) = crate::router::gathered::call(e) {
            return self.gather(e, g);
        }
        let part = match (self.aggregate)(e) {
            Err(m) => {
                self.problem = Some(m);
                return ControlFlow::Break(());
            }
            Ok(true) => true,
            Ok(false) => self.group_texts.contains(&e.to_string()),
        };
        if part {
            let column = self.first_column + self.found.len();
            self.found.push(std::mem::replace(
                e,
                Expr::Identifier(Ident::new(part_name(column))),
            ));
        }
        ControlFlow::Continue(())
    }
}

impl Parts<'_> {
    /// Notes that the template reads bound parameter `p`.
    fn read_param(&mut self, p: &str) -> ControlFlow<()> {
        match bound(p, self.statement, self.params) {
            Ok(n) => {
                if let Err(at) = self.read.binary_search(&n) {
                    self.read.insert(at, n);
                }
                ControlFlow::Continue(())
            }
            Err(m) => {
                self.problem = Some(m);
                ControlFlow::Break(())
            }
        }
    }

    /// Puts gathered call `e`'s parts in the next columns, and a name in its place.
    fn gather(
        &mut self,
        e: &mut Expr,
        g: Result<crate::router::gathered::Gathered, String>,
    ) -> ControlFlow<()> {
        let g = match g {
            Ok(g) => g,
            Err(m) => {
                self.problem = Some(m);
                return ControlFlow::Break(());
            }
        };
        let mut placeholders = Vec::new();
        for c in &g.constants {
            let _ = sqlparser::ast::visit_expressions(c, |e: &Expr| {
                if let Expr::Value(ValueWithSpan {
                    value: Value::Placeholder(p),
                    ..
                }) = e
                {
                    placeholders.push(p.clone());
                }
                ControlFlow::<()>::Continue(())
            });
        }
        for p in placeholders {
            if self.read_param(&p).is_break() {
                return ControlFlow::Break(());
            }
        }
        let first = self.first_column + self.found.len();
        self.found.extend(g.parts.iter().cloned());
        *e = Expr::Identifier(Ident::new(gathered_name(self.gathered.len())));
        self.gathered.push((first, g));
        ControlFlow::Continue(())
    }
}

/// The number of the bound parameter `p` (`$n`) a template reads. Err when the evaluation
/// could read its value otherwise than the client's statement does: not bound, or bound in
/// binary for the type the server inferred, when it also stands elsewhere in the statement
/// (where it may have been inferred as another type of the same size).
fn bound(p: &str, statement: &Query, params: &Params) -> Result<usize, String> {
    let n = p
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n >= 1 && n <= params.values.len())
        .ok_or_else(|| format!("the parameter {p} is not bound"))?;
    if params.binary_undeclared(n) {
        let mut uses = 0;
        let _ = sqlparser::ast::visit_expressions(statement, |e: &Expr| {
            if matches!(e, Expr::Value(ValueWithSpan { value: Value::Placeholder(q), .. }) if q == p)
            {
                uses += 1;
            }
            ControlFlow::<()>::Continue(())
        });
        if uses > 1 {
            return Err(format!(
                "{p}, bound in binary without a declared type and used twice, inside an item computed after merging several shards is not supported"
            ));
        }
    }
    Ok(n)
}

/// What in a template one shard could not evaluate for every group as the group's own server
/// would: another column, a subquery, a bound parameter, a function not of its arguments alone.
fn unfit(template: &Expr) -> Option<String> {
    crate::sql::first_expression(template, |e: &Expr| match e {
        Expr::Identifier(i)
            if i.value.starts_with("__shardgate_c") || i.value.starts_with("__shardgate_g") =>
        {
            None
        }
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Some(format!(
            "column {e}, which is neither grouped nor inside an aggregate"
        )),
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            Some("a subquery".into())
        }
        Expr::Function(f) if !crate::sql::pure_functions::is_pure(&f.name) => Some(format!(
            "{}, which is not an aggregate the merge combines",
            crate::sql::clock::call_as_written(&f.name)
        )),
        Expr::Function(f) if f.over.is_some() || f.filter.is_some() => {
            Some(format!("{}() with OVER or FILTER", f.name))
        }
        _ => None,
    })
}

/// The name PostgreSQL gives an unnamed select item; None when unsure.
pub(crate) fn output_name(e: &Expr) -> Option<String> {
    column_name(e).map(|(n, _)| n)
}

/// The name PostgreSQL gives an unnamed select item, and how strongly (2: a column or
/// function's own name, 1: a type's or keyword's, 0: none, `?column?`); None when unsure.
fn column_name(e: &Expr) -> Option<(String, u8)> {
    let folded = |i: &Ident| {
        if i.quote_style.is_none() {
            i.value.to_ascii_lowercase()
        } else {
            i.value.clone()
        }
    };
    Some(match e {
        Expr::Nested(inner) => return column_name(inner),
        Expr::Identifier(i) => (folded(i), 2),
        Expr::CompoundIdentifier(parts) => (folded(parts.last()?), 2),
        Expr::Function(f) => match f.name.0.last()? {
            ObjectNamePart::Identifier(i) => (folded(i), 2),
            _ => return None,
        },
        Expr::Cast {
            expr, data_type, ..
        } => match column_name(expr)? {
            strong @ (_, 2) => strong,
            _ => (type_name(data_type)?, 1),
        },
        // An array element keeps its array's name, a field its own.
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last()? {
            sqlparser::ast::AccessExpr::Subscript(_) => return column_name(root),
            sqlparser::ast::AccessExpr::Dot(field) => return column_name(field),
        },
        Expr::Case { .. } => ("case".into(), 1),
        Expr::BinaryOp { .. } | Expr::UnaryOp { .. } | Expr::Value(_) => ("?column?".into(), 0),
        _ => return None,
    })
}

/// The last name of a type as PostgreSQL's grammar leaves it, for the types commonly cast to.
fn type_name(t: &DataType) -> Option<String> {
    Some(
        match t {
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
            DataType::BigInt(_) | DataType::Int8(_) => "int8",
            DataType::SmallInt(_) | DataType::Int2(_) => "int2",
            DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric",
            DataType::Real | DataType::Float4 => "float4",
            DataType::DoublePrecision | DataType::Float8 => "float8",
            DataType::Text => "text",
            DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
            DataType::Bool | DataType::Boolean => "bool",
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    /// The aggregates the merge combines, as the aggregate planner tells them.
    fn combined(e: &Expr) -> Result<bool, String> {
        crate::router::aggregate::aggregate_kind(e).map(|k| k.is_some())
    }

    fn expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }

    #[test]
    fn parts_are_the_aggregates_and_group_expressions_outermost_first() {
        let groups = ["owner".to_string()];
        let c = split(
            &expr("owner || ': ' || round(avg(balance), 2) || '/' || coalesce(sum(owner_id), 0)"),
            None,
            &groups,
            3,
            (&statement("select 1"), &Params::default()),
            &combined,
        )
        .unwrap();
        assert_eq!(
            c.parts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["owner", "avg(balance)", "sum(owner_id)"]
        );
        assert_eq!(
            c.template,
            "__shardgate_c3 || ': ' || round(__shardgate_c4, 2) || '/' || coalesce(__shardgate_c5, 0)"
        );
        assert_eq!(c.name.value, "?column?");
        assert!(c
            .stand_in
            .to_string()
            .starts_with("CASE WHEN false THEN owner"));
    }

    #[test]
    fn names_are_the_ones_postgresql_gives() {
        for (sql, name) in [
            ("count(*)::int", "count"),
            ("(sum(x) / count(*))::int", "int4"),
            ("round(avg(x), 2)", "round"),
            ("max(x) - min(x)", "?column?"),
            ("CASE WHEN count(*) > 1 THEN 1 END", "case"),
            ("pg_catalog.round(avg(x))", "round"),
        ] {
            let c = split(
                &expr(sql),
                None,
                &[],
                0,
                (&statement("select 1"), &Params::default()),
                &combined,
            )
            .unwrap();
            assert_eq!(c.name.value, name, "{sql}");
        }
        let aliased = split(
            &expr("count(*)::int"),
            Some(&Ident::new("n")),
            &[],
            0,
            (&statement("select 1"), &Params::default()),
            &combined,
        )
        .unwrap();
        assert_eq!(aliased.name.value, "n");
    }

    fn statement(sql: &str) -> Query {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
        {
            sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bound_parameters_stay_parameters_read_as_the_statement_reads_them() {
        let bound = |format: i16, declared: u32| Params {
            values: [Some(bytes::Bytes::from_static(&[0, 0, 0, 2]))]
                .into_iter()
                .collect(),
            formats: vec![format],
            types: [declared].into_iter().collect(),
        };
        let once = statement("select round(avg(x), $1) from t");
        let twice = statement("select round(avg(x), $1) from t where x > $1");
        let split_in = |q: &Query, params: &Params| {
            let sqlparser::ast::SetExpr::Select(s) = q.body.as_ref() else {
                unreachable!()
            };
            let sqlparser::ast::SelectItem::UnnamedExpr(item) = &s.projection[0] else {
                unreachable!()
            };
            split(item, None, &[], 0, (q, params), &combined)
        };
        let c = split_in(&once, &bound(1, 0)).unwrap();
        assert_eq!(
            (c.template.as_str(), c.params),
            ("round(__shardgate_c0, $1)", vec![1])
        );
        // Elsewhere the server may have inferred another type of the same size.
        assert!(split_in(&twice, &bound(1, 0)).is_err());
        assert!(split_in(&twice, &bound(1, 23)).is_ok());
        assert!(split_in(&twice, &bound(0, 0)).is_ok());
        assert!(split_in(&once, &Params::default()).is_err());
    }

    #[test]
    fn a_gathered_call_reads_its_parts_inside_its_evaluation() {
        let c = split(
            &expr("count(*) || ': ' || string_agg(x, $1 ORDER BY y)"),
            Some(&Ident::new("s")),
            &[],
            4,
            (
                &statement("select string_agg(x, $1 ORDER BY y) from t"),
                &Params {
                    values: [Some(bytes::Bytes::from_static(b","))]
                        .into_iter()
                        .collect(),
                    formats: vec![],
                    types: Default::default(),
                },
            ),
            &combined,
        )
        .unwrap();
        assert_eq!(
            c.parts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["count(*)", "array_agg(x)", "array_agg(y)"]
        );
        // Only the gathered arrays are put in the evaluation's order.
        assert_eq!((c.reordered, c.params), (vec![1, 2], vec![1]));
        assert!(
            c.template.starts_with(
                "__shardgate_c4 || ': ' || (SELECT string_agg(__shardgate_e0, $1 ORDER BY __shardgate_e1) \
                 FROM (SELECT unnest(__shardgate_c5) AS __shardgate_e0, unnest(__shardgate_c6)"),
            "{}",
            c.template
        );
    }

    #[test]
    fn what_one_shard_could_not_evaluate_is_refused() {
        for sql in [
            "count(*) + x",
            "count(*) + (select 1)",
            "my_function(count(*))",
            "string_agg(x, y ORDER BY x) || count(*)",
            "count(*) + now()::int",
            "round(avg(x), $1)",
            "lower(owner)",
        ] {
            assert!(
                split(
                    &expr(sql),
                    None,
                    &[],
                    0,
                    (&statement("select 1"), &Params::default()),
                    &combined
                )
                .is_err(),
                "{sql}"
            );
        }
        // A cast whose type's name is not known here needs an alias.
        assert!(split(
            &expr("(count(*) + 1)::interval"),
            None,
            &[],
            0,
            (&statement("select 1"), &Params::default()),
            &combined
        )
        .is_err());
    }
}
