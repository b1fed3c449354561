//! `FOR NO KEY UPDATE` and `FOR KEY SHARE` written as the next stronger lock, for the parser's
//! sake.
//!
//! sqlparser knows only `FOR UPDATE` and `FOR SHARE`; Django's `select_for_update(no_key=True)`
//! and SQLAlchemy's `with_for_update(key_share=True)` write the other two. The proxy plans the
//! text with the stronger lock of the same kind (the rows, the shards and the plan are the
//! same); a shard runs the client's text as it was whenever that text goes to one shard, and
//! where the proxy writes the statement anew the shards take the stronger lock, which blocks
//! more (a foreign key's check of the row) but changes no answer.

use super::splice::Splice;
use super::tokens::{mentions, significant, Token};

/// `sql` with `NO KEY` of each `FOR NO KEY UPDATE` and `KEY` of each `FOR KEY SHARE` outside
/// quotes and comments left out; None when it has neither.
pub fn lock_strengths_plain(sql: &str) -> Option<String> {
    // Every text the parser cannot read is asked: most answer here.
    if !mentions(sql, b"key") {
        return None;
    }
    let words = significant(sql);
    let is = |i: usize, word: &str| {
        words
            .get(i)
            .is_some_and(|(t, r)| *t == Token::Word && sql[r.clone()].eq_ignore_ascii_case(word))
    };
    let mut out = Splice::new(sql);
    for i in 0..words.len() {
        let left_out = if is(i, "for") && is(i + 1, "no") && is(i + 2, "key") && is(i + 3, "update")
        {
            words[i + 1].1.start..words[i + 2].1.end
        } else if is(i, "for") && is(i + 1, "key") && is(i + 2, "share") {
            words[i + 1].1.clone()
        } else {
            continue;
        };
        out.replace(left_out, "");
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weaker_locks_read_as_the_stronger_ones() {
        assert_eq!(
            lock_strengths_plain("select * from t where id = 1 FOR NO KEY UPDATE of t nowait")
                .as_deref(),
            Some("select * from t where id = 1 FOR  UPDATE of t nowait")
        );
        assert_eq!(
            lock_strengths_plain("select * from t for key /* c */ share skip locked").as_deref(),
            Some("select * from t for  /* c */ share skip locked")
        );
        assert_eq!(
            lock_strengths_plain("select 1 from t for no key update of t for key share of u")
                .as_deref(),
            Some("select 1 from t for  update of t for  share of u")
        );
    }

    #[test]
    fn quoted_and_other_words_stay() {
        for sql in [
            "select 'for no key update' from t",
            "select \"key\" from t for update",
            "select key from t where for_key = 1",
            "select 1 -- for key share\n from t",
        ] {
            assert_eq!(lock_strengths_plain(sql), None, "{sql}");
        }
    }
}
