//! Text read in place from a message: a slice of the message's bytes, checked to be UTF-8 once
//! when decoded, so that decoding a Parse copies nothing.
//!
//! A slice keeps the whole buffer it was read into alive, so what outlives the batch (a
//! statement the session keeps) takes a copy (`to_string`) rather than the `Text`.

use bytes::Bytes;
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` if they are UTF-8.
    pub fn new(bytes: Bytes) -> Option<Text> {
        std::str::from_utf8(&bytes).is_ok().then_some(Text(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `new` (and the `From` conversions, from `str`) let in only UTF-8 bytes, and the
        // bytes never change.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_is_text() {
        assert_eq!(
            Text::new(Bytes::from_static("sélect 1".as_bytes())).unwrap(),
            "sélect 1"
        );
        assert!(Text::new(Bytes::from_static(b"select '\xff'")).is_none());
        assert_eq!(Text::from(String::from("x")).to_string(), "x");
    }
}
