//! `SELECT pg_cancel_backend(pid)` and `SELECT pg_terminate_backend(pid)`, told from their text.
//!
//! In transaction pooling a client's BackendKeyData pid is one the proxy minted, which names no
//! backend; a client that signals it (drivers and pools do, to test how they recover from a
//! lost connection) means its session at the proxy. The one-shard relay reads no SQL beyond a
//! few words, so it recognises these calls by their text: the whole statement is the one call,
//! its argument an integer literal or a parameter (`$1`), optionally cast to `int`, and an
//! alias after `AS`, in a text of at most `LONGEST_CALL` bytes. Anything else is left to the
//! shard, as before.

/// `pg_cancel_backend` or `pg_terminate_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Cancel,
    Terminate,
}

impl SignalKind {
    /// The function's name, which is also its result column's when no alias is given.
    pub fn function(self) -> &'static str {
        match self {
            SignalKind::Cancel => "pg_cancel_backend",
            SignalKind::Terminate => "pg_terminate_backend",
        }
    }

    /// The function of this name (unqualified or in `pg_catalog`, any case), if it is one.
    pub fn of_function(name: &str) -> Option<SignalKind> {
        let name = strip_prefix_ci(name, "pg_catalog.").unwrap_or(name);
        [SignalKind::Cancel, SignalKind::Terminate]
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.function()))
    }
}

/// The call's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Pid(i64),
    /// `$n`, 1-based.
    Param(usize),
}

/// One recognised call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalCall {
    pub kind: SignalKind,
    pub arg: Arg,
    /// The argument is cast to `int` (so a parameter may be declared of any type that casts).
    pub cast: bool,
    /// The result column's name.
    pub column: String,
}

impl SignalCall {
    /// Whether a parameter declared of type `oid` (0: left to the server) makes the call valid,
    /// as PostgreSQL resolves it: `int` as it is, or any of the common types cast to `int`.
    pub fn takes_param_type(&self, oid: u32) -> bool {
        const UNSPECIFIED: u32 = 0;
        const INT2: u32 = 21;
        const INT4: u32 = 23;
        const CASTABLE: [u32; 5] = [20, 25, 705, 1043, 1700]; // int8 text unknown varchar numeric
        matches!(oid, UNSPECIFIED | INT2 | INT4) || (self.cast && CASTABLE.contains(&oid))
    }

    /// The statement a shard runs for the proxy's answer: `true` for a signal delivered, or,
    /// for the caller's own pid, the same call of the backend serving it, which cancels the
    /// statement or ends the connection exactly as PostgreSQL does.
    pub fn answer_sql(&self, own: bool) -> String {
        let column = super::identifier(&self.column);
        if own {
            format!(
                "SELECT {}(pg_backend_pid()) AS {column}",
                self.kind.function()
            )
        } else {
            format!("SELECT true AS {column}")
        }
    }
}

/// The longest text read for a call: a call with comments around it beyond this is left to the
/// shard, and a Query of any length costs no more than this to look at.
pub const LONGEST_CALL: usize = 1024;

/// False when `text` is certainly no call: after any ASCII whitespace it does not start with
/// `select` and a name beginning `pg_` (a comment first still may be one). A few byte
/// comparisons, so that every Query and Parse can be looked at.
pub fn may_be_call(text: &[u8]) -> bool {
    fn skip_space(text: &[u8]) -> &[u8] {
        let at = text
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(text.len());
        &text[at..]
    }
    fn starts_ci(text: &[u8], word: &[u8]) -> bool {
        text.len() >= word.len() && text[..word.len()].eq_ignore_ascii_case(word)
    }
    // Nearly every text starts with its first keyword: told by its first byte.
    let text = match text.first() {
        Some(b's' | b'S') => text,
        Some(b'/' | b'-') => return true,
        Some(b) if b.is_ascii_whitespace() => skip_space(text),
        _ => return false,
    };
    if matches!(text.first(), Some(b'/' | b'-')) {
        return true;
    }
    if !starts_ci(text, b"select") {
        return false;
    }
    let rest = &text[6..];
    let name = skip_space(rest);
    name.len() < rest.len() && starts_ci(name, b"pg_")
}

/// The call `text` is, if it is nothing but one.
pub fn parse(text: &str) -> Option<SignalCall> {
    if text.len() > LONGEST_CALL || !may_be_call(text.as_bytes()) {
        return None;
    }
    // Blanks are PostgreSQL's (ASCII) only: a no-break space is part of a word to its scanner.
    let mut s = Scanner(super::without_leading_comments(text));
    // Nearly every statement fails here, after a few bytes.
    s.keyword("select")?;
    if !s.space() {
        return None;
    }
    let function = s.word()?;
    let kind = SignalKind::of_function(function)?;
    s.space();
    s.symbol("(")?;
    s.space();
    let arg = if s.symbol("$").is_some() {
        Arg::Param(s.digits()?.parse().ok().filter(|n| *n > 0)?)
    } else {
        let minus = s.symbol("-").is_some();
        let n: i64 = s.digits()?.parse().ok()?;
        Arg::Pid(if minus { -n } else { n })
    };
    let cast = s.symbol("::").is_some();
    if cast {
        let ty = s.word()?;
        if !["int", "int4", "integer"]
            .iter()
            .any(|t| ty.eq_ignore_ascii_case(t))
        {
            return None;
        }
    }
    s.space();
    s.symbol(")")?;
    let had_space = s.space();
    let mut column = kind.function().to_string();
    if had_space && s.keyword("as").is_some() {
        if !s.space() {
            return None;
        }
        let alias = s.word()?;
        if alias.contains('.') {
            return None;
        }
        // Unquoted, PostgreSQL folds it to lower case.
        column = alias.to_ascii_lowercase();
        s.space();
    }
    if s.symbol(";").is_some() {
        s.space();
    }
    s.0.is_empty().then_some(SignalCall {
        kind,
        arg,
        cast,
        column,
    })
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// What is left of the text.
struct Scanner<'a>(&'a str);

impl<'a> Scanner<'a> {
    /// Skips whitespace; true when there was some.
    fn space(&mut self) -> bool {
        let rest = self.0.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let skipped = rest.len() < self.0.len();
        self.0 = rest;
        skipped
    }

    fn symbol(&mut self, symbol: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(symbol)?;
        Some(())
    }

    /// A keyword, not followed by more of a word.
    fn keyword(&mut self, word: &str) -> Option<()> {
        let rest = strip_prefix_ci(self.0, word)?;
        if rest.starts_with(is_word_char) {
            return None;
        }
        self.0 = rest;
        Some(())
    }

    /// An unquoted name, possibly qualified.
    fn word(&mut self) -> Option<&'a str> {
        let end = self
            .0
            .find(|c: char| !(is_word_char(c) || c == '.'))
            .unwrap_or(self.0.len());
        let (word, rest) = self.0.split_at(end);
        // A name starts as PostgreSQL's identifiers do: not with a digit, nor with `$`.
        if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
            return None;
        }
        self.0 = rest;
        Some(word)
    }

    fn digits(&mut self) -> Option<&'a str> {
        let end = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, rest) = self.0.split_at(end);
        // A number running on into a word (`12abc`) is not one literal.
        if digits.is_empty() || digits.len() > 18 || rest.starts_with(is_word_char) {
            return None;
        }
        self.0 = rest;
        Some(digits)
    }
}

/// A character of an unquoted identifier, as PostgreSQL's scanner reads one: every
/// non-ASCII character counts as a letter.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: SignalKind, arg: Arg, column: &str) -> Option<SignalCall> {
        Some(SignalCall {
            kind,
            arg,
            cast: false,
            column: column.to_string(),
        })
    }

    #[test]
    fn reads_the_calls_drivers_send() {
        use Arg::*;
        use SignalKind::*;
        let t = "pg_terminate_backend";
        assert_eq!(
            parse("select pg_terminate_backend(4194305)"),
            call(Terminate, Pid(4194305), t)
        );
        assert_eq!(
            parse("SELECT pg_terminate_backend($1)"),
            call(Terminate, Param(1), t)
        );
        assert_eq!(
            parse("  select Pg_Terminate_Backend( $1::int );  "),
            Some(SignalCall {
                cast: true,
                ..call(Terminate, Param(1), t).unwrap()
            })
        );
        assert_eq!(
            parse("/* pool check */ select pg_catalog.pg_cancel_backend(12) as Done;"),
            call(Cancel, Pid(12), "done")
        );
        assert_eq!(
            parse("select\npg_cancel_backend(-3)"),
            call(Cancel, Pid(-3), "pg_cancel_backend")
        );
    }

    #[test]
    fn leaves_everything_else_to_the_shard() {
        for text in [
            "select abalance from pgbench_accounts where aid = 1",
            "select pg_terminate_backend(pid) from pg_stat_activity",
            "select pg_terminate_backend(pg_backend_pid())",
            "select pg_terminate_backend($1, 1000)",
            "select pg_terminate_backend(1) x",
            "select pg_terminate_backend(1), 2",
            "select pg_terminate_backend($1::bigint)",
            "select pg_terminate_backend(12abc)",
            "select pg_terminate_backend($0)",
            "select pg_terminate_backend(1) as a.b",
            "selectpg_terminate_backend(1)",
            "select pg_terminate_backendx(1)",
            "select pg_terminate_backend(1); select 1",
            "select my.pg_terminate_backend(1)",
            // A no-break space is a letter to PostgreSQL, and `$` cannot start a name.
            "\u{a0}select pg_terminate_backend(1)",
            "/* c */\u{a0}select pg_terminate_backend(1)",
            "select pg_terminate_backend(1) as $c",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn the_quick_look_never_turns_a_call_away() {
        for text in [
            "select pg_terminate_backend(1)",
            " \n SELECT\tPG_CANCEL_BACKEND($1)",
            "/* c */ select pg_cancel_backend(1)",
            "-- c\nselect pg_cancel_backend(1)",
            "select pg_catalog.pg_cancel_backend(1)",
        ] {
            assert!(may_be_call(text.as_bytes()), "{text}");
            assert!(parse(text).is_some(), "{text}");
        }
        for text in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "selectpg_cancel_backend(1)",
            "select",
            "",
            "update t set x = 1",
        ] {
            assert!(!may_be_call(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn any_cut_or_damage_of_a_call_is_read_without_panicking() {
        let samples = [
            "/* x */ SELECT pg_catalog.pg_terminate_backend( $12::integer ) AS gone ;",
            "select pg_cancel_backend(-4194305)",
            "select pg_cancel_backend(1) as ünïcode",
        ];
        for text in samples {
            assert!(parse(text).is_some(), "{text}");
            for (at, _) in text.char_indices() {
                let _ = parse(&text[..at]);
                let _ = parse(&text[at..]);
                let mut damaged = text.to_string();
                damaged.replace_range(at..at + text[at..].chars().next().unwrap().len_utf8(), "é");
                let _ = parse(&damaged);
            }
        }
        assert_eq!(
            parse(&format!(
                "select pg_cancel_backend(1) as {}",
                "a".repeat(2000)
            )),
            None
        );
    }

    #[test]
    fn answers_name_the_column_as_the_call_did() {
        let c = parse("select pg_cancel_backend($1) as \"x\"");
        assert_eq!(c, None, "a quoted alias is left to the shard");
        let c = parse("select pg_cancel_backend($1) as x").unwrap();
        assert_eq!(c.answer_sql(false), "SELECT true AS \"x\"");
        assert_eq!(
            c.answer_sql(true),
            "SELECT pg_cancel_backend(pg_backend_pid()) AS \"x\""
        );
    }
}
