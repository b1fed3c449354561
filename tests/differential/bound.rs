//! The generated queries as ORMs send them: their constants bound as parameters in the
//! extended protocol (Parse without parameter types, Bind in text, results in text), so that
//! the proxy routes, limits and filters by bound values rather than by literals.

use super::common::raw::{data_row, startup_packet, Raw};

/// The query with the constants of comparisons, IN lists, BETWEEN, LIMIT and OFFSET replaced
/// by `$1, $2, ...`, and those constants, strings among them. Only constants in WHERE, HAVING
/// and ON (and an outer LIMIT or OFFSET) are bound: one bound in a select list or GROUP BY
/// would no longer match its copy in the other (PostgreSQL refuses a grouped query whose
/// select list says `balance > $1` and GROUP BY `balance > $2`). Arithmetic stays literal, as
/// do strings that are cast or concatenated.
pub fn parametrize(sql: &str) -> (String, Vec<String>) {
    let bytes = sql.as_bytes();
    let (mut out, mut params) = (String::new(), Vec::new());
    let (mut i, mut in_list, mut between) = (0, false, false);
    // Whether the clause being read binds its constants, per parenthesis level: a subquery
    // or FILTER (WHERE ...) sets its own and the level outside it keeps its one.
    let mut binds = vec![false];
    let starts_word = |i: usize| {
        i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_.$".contains(&bytes[i - 1]))
    };
    while i < bytes.len() {
        let c = bytes[i];
        if starts_word(i) {
            let rest = &sql[i..];
            if ["where ", "having ", "on "]
                .iter()
                .any(|k| rest.starts_with(k))
            {
                *binds.last_mut().unwrap() = true;
            } else if ["select ", "group by ", "order by "]
                .iter()
                .any(|k| rest.starts_with(k))
            {
                *binds.last_mut().unwrap() = false;
            }
        }
        let binding = *binds.last().unwrap();
        if c == b'\'' {
            let close = sql[i + 1..].find('\'');
            let end = close.map_or(bytes.len(), |e| i + 1 + e + 1);
            // A string compared or listed is bound as well (text keys route by bound
            // values too), unless a cast or concatenation follows, which would then apply
            // to a parameter of unknown type.
            let before = out.trim_end();
            let after = sql[end..].trim_start();
            let bound = ["=", ">", "<"].iter().any(|w| before.ends_with(w))
                || (in_list && (before.ends_with('(') || before.ends_with(',')));
            if binding
                && bound
                && close.is_some()
                && !after.starts_with("::")
                && !after.starts_with("||")
            {
                params.push(sql[i + 1..end - 1].to_string());
                out.push_str(&format!("${}", params.len()));
            } else {
                out.push_str(&sql[i..end]);
            }
            i = end;
            continue;
        }
        if c.is_ascii_digit() && starts_word(i) {
            let mut end = i;
            while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
                end += 1;
            }
            let before = out.trim_end();
            let compared = ["=", ">", "<", "between"]
                .iter()
                .any(|w| before.ends_with(w))
                || (between && before.ends_with(" and"))
                || (in_list && (before.ends_with('(') || before.ends_with(',')));
            let limit = ["limit", "offset"].iter().any(|w| before.ends_with(w));
            let bound = (binding && compared) || (limit && (binding || binds.len() == 1));
            if bound && !before.ends_with("::") {
                if before.ends_with(" and") {
                    between = false;
                }
                params.push(sql[i..end].to_string());
                out.push_str(&format!("${}", params.len()));
            } else {
                out.push_str(&sql[i..end]);
            }
            i = end;
            continue;
        }
        if sql[i..].starts_with(" in (") {
            in_list = true;
        } else if c == b'(' {
            binds.push(binding);
        } else if c == b')' {
            in_list = false;
            if binds.len() > 1 {
                binds.pop();
            }
        } else if sql[i..].starts_with(" between ") {
            between = true;
        }
        out.push(c as char);
        i += 1;
    }
    (out, params)
}

/// Logs in to `port` as `user` on database postgres.
pub async fn login(port: u16, user: &str) -> Raw {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        196608,
        &[("user", user), ("database", "postgres")],
    ))
    .await;
    let greeting = raw.until_ready().await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{user} logs in");
    raw
}

/// Runs `sql` with `params` bound, in one Parse, Bind, Describe, Execute, Sync: the rows in
/// text, in the order they came, or the SQLSTATE of the first error.
pub async fn answer(
    raw: &mut Raw,
    sql: &str,
    params: &[String],
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut answers = pipeline(raw, &[(sql.to_string(), params.to_vec())], false).await;
    answers.pop().unwrap_or_else(|| panic!("{sql}: no answer"))
}

/// What each statement of a pipeline answered: its rows, or the SQLSTATE it failed with.
pub type Answers = Vec<Result<Vec<Vec<Option<String>>>, String>>;

/// Runs `statements` (texts with their bound values) as one pipeline, each Parse, Bind,
/// Describe and Execute of the unnamed statement and one Sync after them all, sent in one
/// write, or (`paused`) statement by statement with a pause after each, as psycopg sends a
/// pipeline: each statement's answer up to the first error (PostgreSQL skips the rest), its
/// rows in the order they came.
pub async fn pipeline(
    raw: &mut Raw,
    statements: &[(String, Vec<String>)],
    paused: bool,
) -> Answers {
    let mut request = Vec::new();
    for (sql, params) in statements {
        let one = super::common::raw::one_shot(sql, &[], params);
        request.extend_from_slice(&one[..one.len() - 5]);
        if paused {
            raw.send(&std::mem::take(&mut request)).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    request.extend(super::common::raw::message(b'S', &[]));
    raw.send(&request).await;
    let messages = raw.until_ready().await;
    assert_eq!(
        messages.last().map(|m| m.0),
        Some(b'Z'),
        "{statements:?}: no ReadyForQuery"
    );
    let (mut answers, mut rows) = (Vec::new(), Vec::new());
    for (tag, body) in &messages {
        match tag {
            b'D' => rows.push(data_row(body)),
            b'C' | b'I' => answers.push(Ok(std::mem::take(&mut rows))),
            b'E' => {
                answers.push(Err(
                    super::common::raw::field(body, b'C').unwrap_or_default()
                ));
                break;
            }
            _ => {}
        }
    }
    answers
}

#[test]
fn constants_of_comparisons_lists_and_limits_are_bound_and_positions_are_not() {
    let (sql, params) = parametrize(
        "select id, balance > 0, note from accounts where id in (3, 4) and balance > 10.5 \
         and id between 2 and 9 and note = 'n1' and owner = 'x'::text and r.id * 50 = a.id \
         and region in (select region from accounts a3 where id < 7 group by region limit 3) \
         group by 1, balance > 0 having count(*) > 2 order by 2, 1 limit 5 offset 1",
    );
    assert_eq!(
        sql,
        "select id, balance > 0, note from accounts where id in ($1, $2) and balance > $3 \
         and id between $4 and $5 and note = $6 and owner = 'x'::text and r.id * 50 = a.id \
         and region in (select region from accounts a3 where id < $7 group by region limit 3) \
         group by 1, balance > 0 having count(*) > $8 order by 2, 1 limit $9 offset $10"
    );
    assert_eq!(
        params,
        ["3", "4", "10.5", "2", "9", "n1", "7", "2", "5", "1"]
    );
}
