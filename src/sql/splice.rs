//! A statement's text with some of its ranges replaced: how the rewriters that write a text
//! for the parser's sake (`catalog_operators`, `copy_options`, `lock_strength`,
//! `interval_precision`, `isnull_operator`, `string_continuation`) build theirs. Replacements come in order and never overlap.

use std::ops::Range;

pub(super) struct Splice<'a> {
    text: &'a str,
    out: String,
    /// Where the original text not yet copied begins.
    copied: usize,
    replaced: bool,
}

impl<'a> Splice<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Splice {
            text,
            out: String::new(),
            copied: 0,
            replaced: false,
        }
    }

    /// Writes `with` in place of `range`, which starts at or after the last one's end.
    pub(super) fn replace(&mut self, range: Range<usize>, with: &str) {
        if !self.replaced {
            self.out.reserve(self.text.len() + with.len());
        }
        self.out.push_str(&self.text[self.copied..range.start]);
        self.out.push_str(with);
        self.copied = range.end;
        self.replaced = true;
    }

    /// The text with its replacements; None when nothing was replaced.
    pub(super) fn finish(mut self) -> Option<String> {
        if !self.replaced {
            return None;
        }
        self.out.push_str(&self.text[self.copied..]);
        Some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_are_put_in_place_and_none_is_none() {
        let mut s = Splice::new("select a from b");
        s.replace(7..8, "x");
        s.replace(14..15, "yy");
        assert_eq!(s.finish().as_deref(), Some("select x from yy"));
        assert_eq!(Splice::new("select 1").finish(), None);
    }
}
