//! Collection aggregates whose answer is the whole group's, not a concatenation of the shards':
//! `string_agg(x, ', ' ORDER BY k)`, `array_agg(DISTINCT x)`, `jsonb_agg(x ORDER BY k DESC)`,
//! and json_agg in any form (its separator between elements depends on the values' type, so
//! its partials do not concatenate as jsonb_agg's do).
//!
//! The shards gather what the call reads instead: `array_agg(k)` of each ORDER BY key and
//! `array_agg(x)` of the value, each under the call's FILTER. The merge concatenates every
//! array across shards (`Concatenation::Arrays`), and after the merge one shard evaluates the
//! call as the client wrote it over the unnested arrays (see `router::computed`):
//! `(SELECT string_agg(v, ', ' ORDER BY k0) FROM (SELECT unnest(<keys>) AS k0, unnest(<values>)
//! AS v) AS u)`. So PostgreSQL itself orders, removes duplicates and formats, under the types
//! the shards described.
//!
//! Invariants: a row's value and keys sit at one index of their arrays. One shard's arrays of
//! a group come from one aggregation, fed the same rows in the same order (plain array_agg
//! calls under one FILTER, never with an order of their own, which a sort that is not stable
//! could break between them); the merge concatenates each of a group's arrays shard after
//! shard; the unnesting is in a select list, where the arrays are read in lockstep and a
//! composite element stays one value (in FROM, unnest would spread it into columns).

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, ObjectNamePart, OrderByExpr, Value,
};

/// A call answered over its gathered values.
#[derive(Debug)]
pub struct Gathered {
    /// What the shards return for it, in order: `array_agg` of each ORDER BY key (none under
    /// DISTINCT, whose keys are the value), then of the value.
    pub parts: Vec<Expr>,
    /// Whether the evaluation puts the values in an order of its own (ORDER BY or DISTINCT),
    /// so the order the shards' rows come in does not matter.
    pub ordered: bool,
    /// The separator, for string_agg: a literal or a bound value.
    pub separator: Option<Expr>,
    call: Function,
    distinct: bool,
    order: Vec<OrderByExpr>,
}

/// Names of the columns inside the evaluation's subquery.
const KEY: &str = "__shardgate_k";
const VALUE: &str = "__shardgate_v";

/// Whether `e` is a call this module answers, or one of its forms it refuses (named by
/// `call`'s Err).
pub fn answers(e: &Expr) -> bool {
    call(e).is_some()
}

/// The gathering of call `e`, if it is one this module answers; Err: a form of such a call
/// the merge cannot answer, and why.
pub fn call(e: &Expr) -> Option<Result<Gathered, String>> {
    let Expr::Function(f) = e else { return None };
    let name = match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(n)] => n,
        [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(n)]
            if schema.quote_style.is_none() && schema.value.eq_ignore_ascii_case("pg_catalog") =>
        {
            n
        }
        _ => return None,
    };
    let name = name.value.to_ascii_lowercase();
    let arguments = match name.as_str() {
        "string_agg" => 2,
        "array_agg" | "jsonb_agg" | "json_agg" => 1,
        _ => return None,
    };
    if f.over.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let mut order = Vec::new();
    for clause in &list.clauses {
        match clause {
            FunctionArgumentClause::OrderBy(keys) => order.extend(keys.iter().cloned()),
            _ => return None,
        }
    }
    let distinct = match list.duplicate_treatment {
        Some(DuplicateTreatment::Distinct) => true,
        Some(DuplicateTreatment::All) | None => false,
    };
    // Plain calls of the others concatenate as they are (see `Concatenation`).
    if order.is_empty() && !distinct && name != "json_agg" {
        return None;
    }
    let mut args = Vec::with_capacity(arguments);
    for a in &list.args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(x),
            _ => return None,
        }
    }
    if args.len() != arguments {
        return None;
    }
    Some(gathered(f, args[0], args.get(1).copied(), order, distinct))
}

fn gathered(
    f: &Function,
    value: &Expr,
    separator: Option<&Expr>,
    order: Vec<OrderByExpr>,
    distinct: bool,
) -> Result<Gathered, String> {
    let call = Expr::Function(f.clone());
    if let Some(s) = separator {
        // Each row's own separator goes before its value: only one that every row shares
        // gives the evaluation's answer.
        if !matches!(s, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_) | Value::Placeholder(_)))
        {
            return Err(format!(
                "{call} over several shards needs its separator written as a string or bound as a value"
            ));
        }
    }
    // PostgreSQL itself requires DISTINCT's ORDER BY to read the arguments.
    if distinct
        && order
            .iter()
            .any(|k| k.expr.to_string() != value.to_string())
    {
        return Err(format!(
            "{call} over several shards is not supported: with DISTINCT, order by the aggregated value itself"
        ));
    }
    let filter = f
        .filter
        .as_ref()
        .map_or(String::new(), |c| format!(" FILTER (WHERE {c})"));
    let gather = |x: &Expr| {
        crate::sql::expression(&format!("array_agg({x}){filter}"))
            .map_err(|e| format!("{call} over several shards: {e}"))
    };
    let mut parts = Vec::new();
    if !distinct {
        for k in &order {
            parts.push(gather(&k.expr)?);
        }
    }
    parts.push(gather(value)?);
    Ok(Gathered {
        parts,
        ordered: !order.is_empty() || distinct,
        separator: separator.cloned(),
        call: f.clone(),
        distinct,
        order,
    })
}

impl Gathered {
    /// The call evaluated over the gathered arrays, which the evaluation reads as `columns`
    /// (one per part, in order).
    pub fn evaluated(&self, columns: &[String]) -> Result<Expr, String> {
        let (keys, value) = columns.split_at(columns.len().saturating_sub(1));
        let mut unnested: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, c)| format!("unnest({c}) AS {KEY}{i}"))
            .collect();
        unnested.extend(value.iter().map(|c| format!("unnest({c}) AS {VALUE}")));
        let order: Vec<String> = self
            .order
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let by = match self.distinct {
                    true => VALUE.to_string(),
                    false => format!("{KEY}{i}"),
                };
                format!("{by}{}", k.options)
            })
            .collect();
        let mut args = VALUE.to_string();
        if let Some(s) = &self.separator {
            args.push_str(&format!(", {s}"));
        }
        let text = format!(
            "(SELECT {}({}{args}{}) FROM (SELECT {}) AS __shardgate_u)",
            self.call.name,
            if self.distinct { "DISTINCT " } else { "" },
            match order.is_empty() {
                true => String::new(),
                false => format!(" ORDER BY {}", order.join(", ")),
            },
            unnested.join(", "),
        );
        crate::sql::expression(&text).map_err(|e| format!("{} over several shards: {e}", self.call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }

    fn gathered(sql: &str) -> Gathered {
        call(&expr(sql)).expect("answered").expect("gathered")
    }

    fn parts(g: &Gathered) -> Vec<String> {
        g.parts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn keys_then_the_value_are_gathered_under_the_filter() {
        let g =
            gathered("string_agg(name, ', ' ORDER BY id DESC, k NULLS FIRST) FILTER (WHERE ok)");
        assert_eq!(
            parts(&g),
            [
                "array_agg(id) FILTER (WHERE ok)",
                "array_agg(k) FILTER (WHERE ok)",
                "array_agg(name) FILTER (WHERE ok)"
            ]
        );
        assert!(g.ordered);
        let columns: Vec<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(
            g.evaluated(&columns).unwrap().to_string(),
            "(SELECT string_agg(__shardgate_v, ', ' ORDER BY __shardgate_k0 DESC, __shardgate_k1 NULLS FIRST) \
             FROM (SELECT unnest(a) AS __shardgate_k0, unnest(b) AS __shardgate_k1, unnest(c) AS __shardgate_v) AS __shardgate_u)"
        );
    }

    #[test]
    fn distinct_gathers_the_values_alone_and_orders_by_them() {
        let g = gathered("pg_catalog.array_agg(DISTINCT x ORDER BY x DESC)");
        assert_eq!(parts(&g), ["array_agg(x)"]);
        assert_eq!(
            g.evaluated(&["c".into()]).unwrap().to_string(),
            "(SELECT pg_catalog.array_agg(DISTINCT __shardgate_v ORDER BY __shardgate_v DESC) \
             FROM (SELECT unnest(c) AS __shardgate_v) AS __shardgate_u)"
        );
        let other_key = call(&expr("array_agg(DISTINCT x ORDER BY y)")).unwrap();
        assert!(other_key.unwrap_err().contains("aggregated value itself"));
    }

    #[test]
    fn json_agg_is_gathered_even_unordered_and_the_rest_is_left() {
        let g = gathered("json_agg(t)");
        assert!(!g.ordered);
        assert_eq!(parts(&g), ["array_agg(t)"]);
        for left in [
            "string_agg(x, ',')",
            "array_agg(x)",
            "jsonb_agg(x)",
            "json_agg(x) OVER ()",
            "myschema.json_agg(x)",
            "sum(x)",
            "string_agg(x)",
        ] {
            assert!(call(&expr(left)).is_none(), "{left}");
        }
    }

    #[test]
    fn a_separator_must_be_one_for_every_row() {
        assert!(gathered("string_agg(x, $2 ORDER BY x)").separator.is_some());
        let per_row = call(&expr("string_agg(x, sep ORDER BY x)")).unwrap();
        assert!(per_row.unwrap_err().contains("separator"));
    }
}
