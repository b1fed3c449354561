//! The generated queries as ORMs send them: their constants bound as parameters in the
//! extended protocol (Parse without parameter types, Bind in text, results in text), so that
//! the proxy routes, limits and filters by bound values rather than by literals.

use super::common::raw::{data_row, startup_packet, Raw};

/// The query with the constants of comparisons, IN lists, BETWEEN, LIMIT and OFFSET replaced
/// by `$1, $2, ...`, and those constants. Positions in ORDER BY and GROUP BY stay literals
/// (bound, they would sort by a constant), as do constants in strings and other arithmetic.
pub fn parametrize(sql: &str) -> (String, Vec<String>) {
    let bytes = sql.as_bytes();
    let (mut out, mut params) = (String::new(), Vec::new());
    let (mut i, mut in_list, mut between) = (0, false, false);
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            let end = sql[i + 1..]
                .find('\'')
                .map_or(bytes.len(), |e| i + 1 + e + 1);
            out.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        let starts_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_.$".contains(&bytes[i - 1]));
        if c.is_ascii_digit() && starts_word {
            let mut end = i;
            while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
                end += 1;
            }
            let before = out.trim_end();
            let bound = ["=", ">", "<", "limit", "offset", "between"]
                .iter()
                .any(|w| before.ends_with(w))
                || (between && before.ends_with(" and"))
                || (in_list && (before.ends_with('(') || before.ends_with(',')));
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
        } else if c == b')' {
            in_list = false;
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
/// text, or the SQLSTATE of the first error.
pub async fn answer(
    raw: &mut Raw,
    sql: &str,
    params: &[String],
) -> Result<Vec<Vec<Option<String>>>, String> {
    let request = super::common::raw::one_shot(sql, &[], params);
    raw.send(&request).await;
    let messages = raw.until_ready().await;
    assert_eq!(
        messages.last().map(|m| m.0),
        Some(b'Z'),
        "{sql}: no ReadyForQuery"
    );
    if let Some((_, body)) = messages.iter().find(|m| m.0 == b'E') {
        return Err(super::common::raw::field(body, b'C').unwrap_or_default());
    }
    Ok(messages
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|(_, body)| data_row(body))
        .collect())
}

#[test]
fn constants_of_comparisons_lists_and_limits_are_bound_and_positions_are_not() {
    let (sql, params) = parametrize(
        "select id, note from accounts where id in (3, 4) and balance > 10.5 and id between 2 and 9 \
         and note = 'n1' and r.id * 50 = a.id order by 2, 1 limit 5 offset 1",
    );
    assert_eq!(
        sql,
        "select id, note from accounts where id in ($1, $2) and balance > $3 and id between $4 and $5 \
         and note = 'n1' and r.id * 50 = a.id order by 2, 1 limit $6 offset $7"
    );
    assert_eq!(params, ["3", "4", "10.5", "2", "9", "5", "1"]);
}
