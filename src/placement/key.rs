//! Shard-key types and values: what a key looks like in SQL text, in a text-format parameter
//! and in a binary-format parameter, all reduced to one typed value so `5`, `'5'` and `$1 = 5`
//! land on the same shard.

use super::hash;

/// A sharded table's key type, declared in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// smallint, integer, bigint: they hash alike in PostgreSQL for the same value.
    Integer,
    Text,
    Uuid,
}

impl KeyType {
    /// The name messages give the key type.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    pub fn parse(name: &str) -> Result<KeyType, String> {
        match name.to_ascii_lowercase().as_str() {
            "bigint" | "int8" | "int" | "integer" | "int4" | "smallint" | "int2" => {
                Ok(KeyType::Integer)
            }
            "text" | "varchar" | "character varying" => Ok(KeyType::Text),
            "uuid" => Ok(KeyType::Uuid),
            other => Err(format!(
                "key_type {other:?} is not supported (use bigint, integer, smallint, text or uuid)"
            )),
        }
    }

    /// The SQL expression computing a key's slot (0..slot_count) in PostgreSQL, given the key
    /// expression `key`.
    pub fn slot_sql(self, key: &str, slot_count: u32) -> String {
        let f = match self {
            KeyType::Integer => format!(
                "hashint8extended(({key})::int8, {})",
                hash::PARTITION_SEED as i64
            ),
            KeyType::Text => format!(
                "hashtextextended(({key})::text, {})",
                hash::PARTITION_SEED as i64
            ),
            KeyType::Uuid => format!(
                "uuid_hash_extended(({key})::uuid, {})",
                hash::PARTITION_SEED as i64
            ),
        };
        if slot_count.is_power_of_two() {
            // An unsigned 64-bit sum's low bits are those of the two's complement sum, so for a
            // power-of-two count this is the numeric form below in integer arithmetic, several
            // times cheaper per row (a move filters whole tables by it).
            let mask = slot_count - 1;
            let offset = 5305509591434766563u64 % u64::from(slot_count);
            return format!("(((({f}) & {mask}) + {offset}) & {mask})::int");
        }
        format!("((({f})::numeric + 5305509591434766563 + 18446744073709551616) % 18446744073709551616 % {slot_count})::int")
    }
}

/// A key value, typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    Integer(i64),
    Text(String),
    Uuid([u8; 16]),
}

/// The end of the message for an integer key beyond bigint's range, worded as PostgreSQL
/// words it; such a key is refused with SQLSTATE 22003 where a malformed one gets 22P02
/// (`router::keys::bad_key`).
pub const OUT_OF_RANGE: &str = "is out of range for type bigint";

impl KeyValue {
    /// From the text form (an SQL literal's content or a text-format parameter).
    pub fn from_text(ty: KeyType, s: &str) -> Result<KeyValue, String> {
        match ty {
            KeyType::Integer => {
                let t = s.trim();
                t.parse::<i64>().map(KeyValue::Integer).map_err(|_| {
                    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        format!("value \"{s}\" {OUT_OF_RANGE}")
                    } else {
                        format!("invalid input syntax for type bigint: \"{s}\"")
                    }
                })
            }
            KeyType::Text => Ok(KeyValue::Text(s.to_string())),
            KeyType::Uuid => parse_uuid(s).map(KeyValue::Uuid),
        }
    }

    /// From a binary-format parameter of the given type OID (0 = unknown: sized by length).
    pub fn from_binary(ty: KeyType, bytes: &[u8]) -> Result<KeyValue, String> {
        match ty {
            KeyType::Integer => match bytes.len() {
                2 => Ok(KeyValue::Integer(
                    i16::from_be_bytes([bytes[0], bytes[1]]) as i64
                )),
                4 => Ok(KeyValue::Integer(
                    i32::from_be_bytes(bytes.try_into().expect("4")) as i64,
                )),
                8 => Ok(KeyValue::Integer(i64::from_be_bytes(
                    bytes.try_into().expect("8"),
                ))),
                n => Err(format!("binary integer key of {n} bytes")),
            },
            KeyType::Text => std::str::from_utf8(bytes)
                .map(|s| KeyValue::Text(s.to_string()))
                .map_err(|_| "binary text key is not UTF-8".to_string()),
            KeyType::Uuid => bytes
                .try_into()
                .map(KeyValue::Uuid)
                .map_err(|_| format!("binary uuid key of {} bytes", bytes.len())),
        }
    }

    /// PostgreSQL's partition row hash of this value.
    pub fn partition_hash(&self) -> u64 {
        let h = match self {
            KeyValue::Integer(v) => hash::hashint8_extended(*v, hash::PARTITION_SEED),
            KeyValue::Text(s) => hash::hash_bytes_extended(s.as_bytes(), hash::PARTITION_SEED),
            KeyValue::Uuid(u) => hash::hash_bytes_extended(u, hash::PARTITION_SEED),
        };
        hash::partition_hash(h)
    }
}

fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    // PostgreSQL accepts optional braces and hyphens after any group of four digits.
    let hex: String = s
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid input syntax for type uuid: \"{s}\""));
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("checked hex");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_forms_agree() {
        let a = KeyValue::from_text(KeyType::Integer, "42").unwrap();
        let b = KeyValue::from_binary(KeyType::Integer, &42i32.to_be_bytes()).unwrap();
        let c = KeyValue::from_binary(KeyType::Integer, &42i64.to_be_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        let u1 =
            KeyValue::from_text(KeyType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        let u2 = KeyValue::from_text(KeyType::Uuid, "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}").unwrap();
        assert_eq!(u1, u2);
        assert!(KeyValue::from_text(KeyType::Integer, "x").is_err());
        // Digits beyond bigint's range are out of range, as PostgreSQL says; others malformed.
        let beyond = KeyValue::from_text(KeyType::Integer, "9223372036854775808").unwrap_err();
        assert!(beyond.ends_with(OUT_OF_RANGE), "{beyond}");
        assert!(
            KeyValue::from_text(KeyType::Integer, " -9223372036854775809 ")
                .unwrap_err()
                .ends_with(OUT_OF_RANGE)
        );
        for malformed in ["5.0", "1e3", "-", "", "0x10"] {
            let e = KeyValue::from_text(KeyType::Integer, malformed).unwrap_err();
            assert!(e.starts_with("invalid input syntax"), "{malformed}: {e}");
        }
        assert!(KeyValue::from_text(KeyType::Uuid, "123").is_err());
    }
}
