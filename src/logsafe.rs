//! Client-supplied text in log lines.
//!
//! A user name, database or statement name comes from the client and may hold newlines or
//! terminal escapes; written raw, it could forge log lines or rewrite an operator's terminal.
//! `Escaped` writes control characters as Rust escapes (`\n`, `\u{1b}`) and leaves the rest.

use std::fmt;

pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            Escaped("bob\n2026-01-01 INFO forged\u{1b}[2J").to_string(),
            "bob\\n2026-01-01 INFO forged\\u{1b}[2J"
        );
        assert_eq!(Escaped("zoë").to_string(), "zoë");
    }
}
