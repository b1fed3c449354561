//! Splitting a simple-protocol Query text into its statements without parsing them.
//!
//! When sqlparser cannot read a text, the proxy must still know where each statement starts, so
//! that a leading `SET` cannot carry an `INSERT` to every shard. The splitter follows the lexical
//! rules PostgreSQL's own scanner uses for the places a `;` does not end a statement: quoted
//! strings (`'...'` with `''`, `E'...'` with backslash escapes), quoted identifiers, dollar-quoted
//! bodies, `--` and nested `/* */` comments. It never guesses beyond that; a piece it produces
//! that is not one analysable statement is refused by the planner, never sent anywhere whole.

/// The statements of `sql`, trimmed, empty ones dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => {
                push(&mut out, &sql[start..i]);
                start = i + 1;
                i += 1;
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2]));
                i = skip_quoted(b, i + 1, b'\'', escapes);
            }
            b'"' => i = skip_quoted(b, i + 1, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i + 2),
            b'$' if i == 0 || !is_ident(b[i - 1]) => i = skip_dollar(b, i),
            _ => i += 1,
        }
    }
    push(&mut out, &sql[start..]);
    out
}

fn push<'a>(out: &mut Vec<&'a str>, piece: &'a str) {
    let piece = piece.trim();
    if !piece.is_empty() {
        out.push(piece);
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Index after the closing quote (a doubled quote is part of the text).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> usize {
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index after the end of a (nested) block comment.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 1;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// At a `$`: if it opens a dollar quote (`$$` or `$tag$`), the index after its closing tag;
/// otherwise (a parameter such as `$1`) the next index.
fn skip_dollar(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && is_ident(b[j]) && !(j == i + 1 && b[j].is_ascii_digit()) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements(
                "set application_name='a'; insert into accounts (id) values (777); checkpoint"
            ),
            vec![
                "set application_name='a'",
                "insert into accounts (id) values (777)",
                "checkpoint"
            ]
        );
        assert_eq!(
            split_statements("select 'a;b', \"c;d\", E'\\';x' ; ;select 2;"),
            vec!["select 'a;b', \"c;d\", E'\\';x'", "select 2"]
        );
        assert_eq!(
            split_statements("do $f$ begin perform 1; end $f$; select $1; select $$;$$"),
            vec![
                "do $f$ begin perform 1; end $f$",
                "select $1",
                "select $$;$$"
            ]
        );
        assert_eq!(
            split_statements("select 1 -- c;\n; /* a /* b; */ ; */ select 2"),
            vec!["select 1 -- c;", "/* a /* b; */ ; */ select 2"]
        );
        // An identifier ending in e is not an escape string prefix.
        assert_eq!(
            split_statements("select name'x';select 3"),
            vec!["select name'x'", "select 3"]
        );
    }

    #[test]
    fn unterminated_quotes_swallow_the_rest() {
        assert_eq!(
            split_statements("set x = 'a; insert into t values (1)"),
            vec!["set x = 'a; insert into t values (1)"]
        );
    }
}
