//! Statement shapes: a text with its number and string literals replaced by numbered markers, so
//! that `... where id = 5` and `... where id = 6` share one parse.
//!
//! A shape is only ever used after it has been proven on a real text: the caller parses the text
//! itself and the shape's template, fills the template with the text's literals, and keeps the
//! template only if the result equals the real parse (sqlparser's equality ignores source
//! positions). A literal in a place a marker cannot stand (`DATE '2020-01-01'`, `COMMENT ... IS
//! '...'`) makes the template fail to parse or differ, and that shape is then never used. The
//! parser's choices depend on token kinds, not on literal values, so a shape proven once holds for
//! every text of that shape.

use sqlparser::ast::{Expr, Statement, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};
use std::fmt::Write;
use std::ops::ControlFlow;

/// Markers are placeholders numbered from here; a text that already uses such numbers is not
/// shaped, so a client's own `$n` can never be taken for a marker.
const FIRST_MARKER: u64 = 9_000_000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shape {
    /// The text with markers in place of its literals.
    pub key: String,
    /// The literals replaced, in marker order: the first stands for `$9000000`.
    literals: Vec<Value>,
}

/// Writes the marker of the next literal (the `n`th, from 0) into a shape's key.
fn push_marker(key: &mut String, n: usize) {
    // Not `write!`: its formatting machinery was a quarter of shaping a point lookup.
    key.push('$');
    key.push_str(itoa::Buffer::new().format(FIRST_MARKER + n as u64));
}

/// The shape of `sql`, or `None` when it has no literal to replace or cannot be tokenized.
pub fn shape_of(sql: &str) -> Option<Shape> {
    let mut shape = Shape::default();
    shape_into(sql, &mut shape).then_some(shape)
}

/// As `shape_of`, written into `shape` (whose allocations a session reuses for every simple
/// query); false when there is no shape, and `shape` then holds nothing of use.
pub fn shape_into(sql: &str, shape: &mut Shape) -> bool {
    match plain_shape(sql, shape) {
        Some(found) => found,
        None => match tokenized_shape(sql) {
            Some(tokenized) => {
                *shape = tokenized;
                true
            }
            None => false,
        },
    }
}

/// The shape of a text that a plain scan can take apart: `None` when it holds anything whose
/// reading needs the full tokenizer (dollar quotes and `$n`, comments, backslashes, strings with
/// a prefix such as `E'..'` or `U&'..'`, an unclosed quote).
///
/// The literals it replaces are exactly tokens the tokenizer would read as one literal whatever
/// they hold: a quoted string (`''` inside) after no letter, and digits with at most one inner
/// point after nothing that could make them part of a word or a longer number. Everything else
/// is kept byte for byte, so texts of one key differ only inside those tokens, which is what
/// makes one proven template good for all of them. The tokenizer is most of the cost of a
/// simple query's lookup, and a driver's texts are nearly always this plain.
fn plain_shape(sql: &str, shape: &mut Shape) -> Option<bool> {
    let b = sql.as_bytes();
    let in_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let Shape { key, literals } = shape;
    key.clear();
    key.reserve(sql.len() + 8);
    // Literals found so far; the ones after them are the last text's, whose strings are
    // written over (a session's texts mostly have the same literals, and a String each was
    // an allocation per query).
    let mut found = 0;
    let mut add = |key: &mut String, number: bool, text: &str| {
        push_marker(key, found);
        set_literal(literals, found, number, text);
        found += 1;
    };
    // `sql[..copied]` is in `key` already.
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        let c = b[i];
        // Most bytes are words and spaces, stepped over with one table look each.
        if !LOOKED_AT[c as usize] {
            i += 1;
            continue;
        }
        let before = i.checked_sub(1).map(|p| b[p]);
        match c {
            b'$' | b'\\' => return None,
            b'-' | b'/' if b.get(i + 1) == Some(&if c == b'-' { b'-' } else { b'*' }) => {
                return None
            }
            b'"' => i = after_quoted(b, i)?,
            b'\'' => {
                if before.is_some_and(|p| in_word(p) || p == b'&') {
                    return None;
                }
                let end = after_quoted(b, i)?;
                let inner = &sql[i + 1..end - 1];
                key.push_str(&sql[copied..i]);
                add(key, false, inner);
                (copied, i) = (end, end);
            }
            b'0'..=b'9' if !before.is_some_and(|p| in_word(p) || p == b'.') => {
                let digits = |mut j: usize| {
                    while b.get(j).is_some_and(u8::is_ascii_digit) {
                        j += 1;
                    }
                    j
                };
                let mut end = digits(i);
                if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
                    end = digits(end + 1);
                }
                // `1e5`, `1_000`, `0x1F`, `1.2.3`: kept as written (the text gets a key of its
                // own).
                if !b.get(end).is_some_and(|&n| in_word(n) || n == b'.') {
                    key.push_str(&sql[copied..i]);
                    add(key, true, &sql[i..end]);
                    copied = end;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    key.push_str(&sql[copied..]);
    literals.truncate(found);
    Some(found > 0)
}

/// Makes the `n`th literal (from 0, at most one past the last) the number `text` or the string
/// whose quoted inside is `text` (`''` standing for a quote), in the String already there if
/// that literal had one.
fn set_literal(literals: &mut Vec<Value>, n: usize, number: bool, text: &str) {
    let mut s = match literals.get_mut(n) {
        Some(Value::Number(s, _) | Value::SingleQuotedString(s)) => std::mem::take(s),
        _ => String::new(),
    };
    s.clear();
    if number {
        s.push_str(text);
    } else {
        for (i, part) in text.split("''").enumerate() {
            if i > 0 {
                s.push('\'');
            }
            s.push_str(part);
        }
    }
    let value = if number {
        Value::Number(s, false)
    } else {
        Value::SingleQuotedString(s)
    };
    match literals.get_mut(n) {
        Some(v) => *v = value,
        None => literals.push(value),
    }
}

/// The bytes `plain_shape` must look at: the ones its match below tells apart.
const LOOKED_AT: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    t[b'$' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'-' as usize] = true;
    t[b'/' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\'' as usize] = true;
    t
};

/// The position after the quoted string or identifier that opens at `open` (a doubled quote
/// stands for one inside); `None` if it is never closed or holds a backslash.
fn after_quoted(b: &[u8], open: usize) -> Option<usize> {
    let quote = b[open];
    let mut j = open + 1;
    loop {
        match *b.get(j)? {
            b'\\' => return None,
            c if c == quote => {
                if b.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return Some(j + 1);
                }
            }
            _ => j += 1,
        }
    }
}

/// The shape of `sql` read by sqlparser's tokenizer (what `plain_shape` leaves to it).
fn tokenized_shape(sql: &str) -> Option<Shape> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut key = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    for token in &tokens {
        let literal = match token {
            Token::Number(n, long) => Some(Value::Number(n.clone(), *long)),
            Token::SingleQuotedString(s) => Some(Value::SingleQuotedString(s.clone())),
            Token::Placeholder(p) => {
                let n: Option<u64> = p.strip_prefix('$').and_then(|d| d.parse().ok());
                if n.is_some_and(|n| n >= FIRST_MARKER) {
                    return None;
                }
                None
            }
            _ => None,
        };
        match literal {
            Some(value) => {
                push_marker(&mut key, literals.len());
                literals.push(value);
            }
            // Written in place: a String per token showed in the profile of simple queries.
            None => {
                let _ = write!(key, "{token}");
            }
        }
    }
    (!literals.is_empty()).then_some(Shape { key, literals })
}

/// The position of a marker among a shape's literals (`$9000000` is the first).
fn marker_index(marker: &str) -> Option<usize> {
    let n: u64 = marker.strip_prefix('$')?.parse().ok()?;
    usize::try_from(n.checked_sub(FIRST_MARKER)?).ok()
}

impl Shape {
    /// The template's statements with this shape's literals put back.
    pub fn fill(&self, template: &[Statement]) -> Vec<Statement> {
        let mut out = template.to_vec();
        for stmt in &mut out {
            let _ = sqlparser::ast::visit_expressions_mut(stmt, |e: &mut Expr| {
                if let Expr::Value(v) = e {
                    if let Value::Placeholder(p) = &v.value {
                        if let Some(literal) = marker_index(p).and_then(|i| self.literals.get(i)) {
                            v.value = literal.clone();
                        }
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        out
    }

    /// The text of the literal that `$n` stands for in `literal_texts` order (the first is
    /// `$1`), as `literal_texts` gives it; None past the last or for another kind of literal.
    pub fn literal_text(&self, n: usize) -> Option<&str> {
        match self.literals.get(n.checked_sub(1)?)? {
            Value::Number(text, _) | Value::SingleQuotedString(text) => Some(text),
            _ => None,
        }
    }

    /// The literals in marker order, as a text-format parameter would carry them: a number as
    /// written, a string without its quotes.
    pub fn literal_texts(&self) -> Vec<Option<String>> {
        self.literals
            .iter()
            .map(|value| match value {
                Value::Number(n, _) => Some(n.clone()),
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The template's statements with each marker turned into the parameter `$n` it stands for
    /// in `literal_texts` order (the first marker is `$1`). None when the template holds a
    /// placeholder that is not a marker, which a parameter could be taken for.
    pub fn as_parameters(template: &[Statement]) -> Option<Vec<Statement>> {
        let mut out = template.to_vec();
        let mut foreign = false;
        for stmt in &mut out {
            let _ = sqlparser::ast::visit_expressions_mut(stmt, |e: &mut Expr| {
                if let Expr::Value(v) = e {
                    if let Value::Placeholder(p) = &mut v.value {
                        match marker_index(p) {
                            Some(i) => *p = format!("${}", i + 1),
                            None => foreign = true,
                        }
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        (!foreign).then_some(out)
    }

    /// The template of this shape, if it parses and reproduces `parsed` (the real parse of the
    /// text this shape came from) exactly.
    pub fn proven_template(&self, parsed: &[Statement]) -> Option<Vec<Statement>> {
        let template =
            sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, &self.key).ok()?;
        (self.fill(&template) == parsed).then_some(template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Vec<Statement> {
        sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()
    }

    #[test]
    fn a_shape_written_over_holds_only_the_new_texts_literals() {
        let texts = [
            "select * from t where a = 1 and b = 'x''y'",
            "select 'a', 2.5, 3",
            "select 5",
            "select * from t where a = 'it''s' and b = 'z'",
            "select 1 from t where a = $1 -- 2",
            "select 'only'",
        ];
        let mut reused = Shape::default();
        for sql in texts {
            let found = shape_into(sql, &mut reused);
            let fresh = shape_of(sql);
            assert_eq!(found, fresh.is_some(), "{sql}");
            if let Some(fresh) = fresh {
                assert_eq!(reused, fresh, "{sql}");
            }
        }
    }

    #[test]
    fn texts_differing_in_literals_share_a_shape_and_keep_their_values() {
        let a = shape_of("select * from t where id = 5 and name = 'x' limit 10").unwrap();
        let b = shape_of("select * from t where id = 6 and name = 'it''s' limit 3").unwrap();
        assert_eq!(a.key, b.key);
        let template = a
            .proven_template(&parse(
                "select * from t where id = 5 and name = 'x' limit 10",
            ))
            .expect("a plain shape is proven");
        assert_eq!(
            b.fill(&template),
            parse("select * from t where id = 6 and name = 'it''s' limit 3")
        );
    }

    #[test]
    fn shapes_that_do_not_reproduce_the_text_are_refused() {
        // A typed literal cannot hold a marker: the template does not parse.
        let sql = "select * from t where d = date '2020-01-01'";
        assert!(shape_of(sql)
            .unwrap()
            .proven_template(&parse(sql))
            .is_none());
        // A client's own marker-sized placeholder: not shaped at all.
        assert!(shape_of("select $9000001, 5").is_none());
        // No literal: nothing to share.
        assert!(shape_of("select * from t where id = $1").is_none());
    }

    #[test]
    fn a_template_becomes_a_statement_with_parameters_in_literal_order() {
        let sql = "select * from t where id = 5 and name = 'it''s' limit 10";
        let shape = shape_of(sql).unwrap();
        assert_eq!(
            shape.literal_texts(),
            [Some("5".into()), Some("it's".into()), Some("10".into())]
        );
        for (n, text) in [
            (0, None),
            (1, Some("5")),
            (2, Some("it's")),
            (3, Some("10")),
            (4, None),
        ] {
            assert_eq!(shape.literal_text(n), text, "${n}");
        }
        let template = shape.proven_template(&parse(sql)).unwrap();
        assert_eq!(
            Shape::as_parameters(&template).unwrap(),
            parse("select * from t where id = $1 and name = $2 limit $3")
        );
        // A statement whose template already holds a parameter of its own is not converted.
        let own = parse("select * from t where id = $1 and v = $9000000");
        assert!(Shape::as_parameters(&own).is_none());
    }

    /// The literals, in order, as sqlparser's tokenizer reads them.
    fn tokenized_literals(sql: &str) -> Vec<Option<String>> {
        tokenized_shape(sql)
            .map(|s| s.literal_texts())
            .unwrap_or_default()
    }

    #[test]
    fn the_plain_scan_reads_the_literals_the_tokenizer_reads() {
        for sql in [
            "select abalance from pgbench_accounts where aid = 123",
            "SELECT \"t1\".\"col'2\" FROM \"T\" WHERE \"T\".id=5 AND v<>'a''b' LIMIT 10",
            "select * from t2 where x = 1.50 and y = -3 and z::int4 = 0 or w in (7,8)",
            "select 'it''s', '', 'ä€', x1, col_9 from t where n != 42",
            "update t set v = v + 1.5 where id = 7 returning *",
            "select a.b from a where a.c>=10 and a.d<=0.5",
            "select 'a'\n'b'",
        ] {
            let mut plain = Shape::default();
            let found = plain_shape(sql, &mut plain).expect(sql);
            let literals = if found { plain.literal_texts() } else { vec![] };
            assert_eq!(literals, tokenized_literals(sql), "{sql}");
        }
        // Numbers the scan does not take apart are kept as written, so they are part of the key
        // and texts that differ in them never share one.
        let kept = "select 1e5, 1.2.3, 1_000, 0x1F, 5., .5, 6 from t";
        let mut shape = Shape::default();
        assert_eq!(plain_shape(kept, &mut shape), Some(true));
        assert_eq!(shape.literal_texts(), [Some("6".to_string())]);
        assert_eq!(shape.key, kept.replace(" 6 ", " $9000000 "));
    }

    #[test]
    fn texts_the_plain_scan_cannot_read_go_to_the_tokenizer() {
        for sql in [
            "select $1 from t where id = 5",
            "select $$x$$, 5",
            "select E'a\\'b', 5",
            "select U&'d\\0061t', 5",
            "select B'0101', 5",
            "select 5 -- five",
            "select /* 5 */ 6",
            "select 'a\\', 5",
            "select 'unclosed",
            "select \"unclosed",
        ] {
            assert!(plain_shape(sql, &mut Shape::default()).is_none(), "{sql}");
        }
        // And the tokenizer still shapes them where it can.
        assert_eq!(
            shape_of("select E'a\\'b', 5").map(|s| s.literal_texts().len()),
            tokenized_shape("select E'a\\'b', 5").map(|s| s.literal_texts().len())
        );
    }

    #[test]
    fn a_reused_shape_is_what_a_fresh_one_would_be() {
        // Longer texts first, then shorter ones, texts without a shape and texts only the
        // tokenizer reads in between: nothing of an earlier text may stay behind.
        let mut scratch = Shape::default();
        for sql in [
            "select * from t where id in (1, 2, -3) and v = 'x' order by 2 desc",
            "select 1",
            "select now()",
            "select E'a\\'b', 5",
            "select 'it''s', 7 from t",
            "select $1 from t",
            "select 8",
        ] {
            let found = shape_into(sql, &mut scratch);
            assert_eq!(found.then(|| scratch.clone()), shape_of(sql), "{sql}");
        }
    }

    #[test]
    fn negative_numbers_and_in_lists_round_trip() {
        for sql in [
            "select * from t where id in (1, 2, -3) order by 2 desc",
            "insert into t (id, v) values (1, 'a'), (2, 'b') returning id",
            "update t set v = v + 1.5 where id = 7",
        ] {
            let shape = shape_of(sql).unwrap();
            let template = shape.proven_template(&parse(sql)).expect(sql);
            assert_eq!(shape.fill(&template), parse(sql), "{sql}");
        }
    }
}
