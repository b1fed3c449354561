//! Server side of MD5 password authentication.
//!
//! The client answers `md5` + hex(md5(stored_hash_hex_without_prefix + salt)); the proxy computes
//! the same from the stored `md5...` hash and compares in constant time.

use md5::{Digest, Md5};

/// True when `response` is the right answer to `salt` for the stored hash.
pub fn verify(stored: &str, salt: [u8; 4], response: &str) -> bool {
    let mut h = Md5::new();
    h.update(stored.as_bytes().get(3..).unwrap_or_default());
    h.update(salt);
    let expected = format!("md5{}", hex(&h.finalize()));
    constant_time_eq(expected.as_bytes(), response.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_client_side() {
        let stored = postgres_protocol::password::md5(b"secret", "app");
        let salt = [1, 2, 3, 4];
        let answer = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        assert!(verify(&stored, salt, &answer));
        let wrong = postgres_protocol::authentication::md5_hash(b"app", b"wrong", salt);
        assert!(!verify(&stored, salt, &wrong));
    }
}
