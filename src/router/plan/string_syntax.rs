//! `standard_conforming_strings`, which decides how PostgreSQL reads a backslash in a plain
//! `'...'` string, refused off on several shards.
//!
//! Everything the proxy reads of statement text (where statements end, which keys a statement
//! names) reads plain strings as PostgreSQL does with the setting on, its default since 9.1.
//! With it off `'\'; insert ...; --'` is one string to the shards and three statements to the
//! proxy's splitter, and a key written `'a\\b'` is `a\b` to the shards but `a\\b` to the
//! router, which would then choose another key's shard. So a session may not turn it off: not
//! by SET, not by `set_config()` with the name written out or bound, not at login. An
//! `E'...'` string reads the same either way, and is the portable way to write a backslash.

use super::*;
use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};

/// The setting's name, as PostgreSQL matches it (in any case).
pub const NAME: &str = "standard_conforming_strings";

/// Whether `value` turns the setting on as PostgreSQL's boolean reader takes it (`on`, `true`,
/// `yes`, `1`, and the prefixes it accepts of the words), or is `DEFAULT`. Anything else turns
/// it off or is an error PostgreSQL reports.
pub fn keeps_it_on(value: &str) -> bool {
    let v = value
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .trim()
        .to_ascii_lowercase();
    let prefix_of = |word: &str, least: usize| v.len() >= least && word.starts_with(v.as_str());
    v == "1" || v == "default" || prefix_of("true", 1) || prefix_of("yes", 1) || v == "on"
}

/// The refusal, for a statement and (as FATAL) for a login.
pub fn refusal() -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "standard_conforming_strings = off is not supported on several shards",
    )
    .with_hint("shardgate reads plain strings as PostgreSQL does with it on (the default): keep it on, and write a backslash escape as E'...'.")
}

/// The refusal of a shard connection that has it off (by the shard's configuration, or an
/// `ALTER ROLE` / `ALTER DATABASE ... SET`): nothing runs on such a connection.
pub fn shard_refusal(shard: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("shard {shard} has standard_conforming_strings off, which is not supported on several shards"),
    )
    .with_hint("Set standard_conforming_strings = on in the shard's configuration (and in any ALTER ROLE or ALTER DATABASE ... SET).")
}

/// `SET [SESSION | LOCAL] standard_conforming_strings {TO | =} <not on>`: refused.
pub(super) fn set_refused(sql: &str) -> Option<Plan> {
    // Every SET is asked: nothing is copied unless it names the setting.
    let mut words = crate::sql::words_after_set(sql)?;
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("session") || name.eq_ignore_ascii_case("local") {
        name = words.next()?;
    }
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut value = words.next()?;
    if value.eq_ignore_ascii_case("to") {
        value = words.next()?;
    }
    (!keeps_it_on(value)).then(|| Plan::Reject(refusal()))
}

/// A `set_config('standard_conforming_strings', <not on>, ...)` anywhere in `q`, its name and
/// value written out or bound as parameters: refused. A name that is neither (an expression)
/// is not looked into; PostgreSQL's name for the setting must then come from the data.
pub(super) fn set_config_refused(q: &Query, params: &Params) -> Option<Plan> {
    let mut refused = false;
    let _ = sqlparser::ast::visit_expressions(q, |e: &Expr| {
        if let Expr::Function(f) = e {
            if last_ident(&f.name).eq_ignore_ascii_case("set_config") {
                let args = arguments(&f.args);
                let name = args.first().and_then(|a| constant(a, params));
                if name.is_some_and(|n| n.trim().eq_ignore_ascii_case(NAME)) {
                    // A value that is no constant may be anything: refused too.
                    let value = args.get(1).and_then(|a| constant(a, params));
                    refused = !value.is_some_and(|v| keeps_it_on(&v));
                }
            }
        }
        if refused {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    refused.then(|| Plan::Reject(refusal()))
}

fn arguments(args: &FunctionArguments) -> Vec<&Expr> {
    let FunctionArguments::List(list) = args else {
        return Vec::new();
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// A string literal's text, or a bound parameter's (through casts; set_config's arguments
/// are text, whose binary form drivers such as tokio-postgres send is its bytes).
fn constant(e: &Expr, params: &Params) -> Option<String> {
    match super::super::keys::strip(e) {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Placeholder(p) => params.text(p.strip_prefix('$')?.parse().ok()?),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_is_what_postgresql_reads_as_true() {
        for on in [
            "on", "ON", "'true'", "t", "tr", "yes", "y", "1", " on ", "DEFAULT",
        ] {
            assert!(keeps_it_on(on), "{on}");
        }
        for off in [
            "off", "of", "false", "f", "no", "n", "0", "'off'", "o", "maybe", "",
        ] {
            assert!(!keeps_it_on(off), "{off}");
        }
    }

    #[test]
    fn only_a_set_that_turns_it_off_is_refused() {
        let refused = |sql: &str| set_refused(sql).is_some();
        assert!(refused("set standard_conforming_strings to off"));
        assert!(refused(
            "SET SESSION Standard_Conforming_Strings = 'false';"
        ));
        assert!(refused("set local standard_conforming_strings=0"));
        assert!(!refused("set standard_conforming_strings to on"));
        assert!(!refused("set standard_conforming_strings = default"));
        assert!(!refused("set escape_string_warning to off"));
        assert!(!refused("select 'set standard_conforming_strings off'"));
    }
}
