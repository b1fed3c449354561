//! Built-in functions whose value depends on their arguments alone (and on the session's
//! settings, which the proxy keeps alike on every shard): whichever server evaluates them gives
//! the same answer. The planner lets such calls run where it chooses (one shard for every
//! group of a merged aggregate, every shard for a row they all return alike). A function of
//! the user's own is never among them: it could read a sharded table, or be volatile.

/// Sorted for `binary_search`.
const PURE: &[&str] = &[
    "abs",
    "array_dims",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_to_string",
    "array_upper",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "coalesce",
    "concat",
    "concat_ws",
    "date_part",
    "date_trunc",
    "div",
    "exp",
    "floor",
    "greatest",
    "initcap",
    "json_typeof",
    "jsonb_array_length",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "mod",
    "nullif",
    "octet_length",
    "power",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "strpos",
    "substr",
    "to_char",
    "to_hex",
    "translate",
    "trunc",
    "upper",
];

/// The proxy's own function of its arguments alone, in the `shardgate` schema of every shard:
/// a variance or standard deviation from merged sums (see `router::variance`).
pub const VARIANCE_OF: &str = "variance_of";

/// Whether a call of this name (unqualified or in pg_catalog) is one of them.
pub fn is_pure(name: &sqlparser::ast::ObjectName) -> bool {
    use sqlparser::ast::ObjectNamePart;
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_none() => {
                i.value.to_ascii_lowercase()
            }
            ObjectNamePart::Identifier(i) => i.value.clone(),
            _ => String::new(),
        })
        .collect();
    match parts.as_slice() {
        [f] => PURE.binary_search(&f.as_str()).is_ok(),
        [schema, f] if schema == "pg_catalog" => PURE.binary_search(&f.as_str()).is_ok(),
        [schema, f] if schema == "shardgate" => f == VARIANCE_OF,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listed_in_order_for_the_binary_search() {
        assert!(super::PURE.windows(2).all(|w| w[0] < w[1]));
    }
}
