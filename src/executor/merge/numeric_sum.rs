//! A numeric sum as PostgreSQL's numeric `+` makes it: exact while every value is finite; NaN
//! once a NaN is added, or infinities of both signs; an infinity once one is added otherwise.
//! PostgreSQL's sum and avg of numeric follow the same rules, so the shards' partial sums
//! combine by them.

use crate::executor::numeric::Num;
use bytes::Bytes;

/// The sign words of numeric's binary form for the values that are not finite.
const NAN: u16 = 0xC000;
const POSITIVE_INFINITY: u16 = 0xD000;
const NEGATIVE_INFINITY: u16 = 0xF000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NumSum {
    Finite(Num),
    NaN,
    /// true: negative.
    Infinity(bool),
}

impl NumSum {
    /// A shard's partial in `format`; None when it is no numeric.
    pub(super) fn read(raw: &[u8], format: i16) -> Option<NumSum> {
        if format == 1 {
            if let Some(v) = Num::from_binary(raw) {
                return Some(NumSum::Finite(v));
            }
            let sign = u16::from_be_bytes(raw.get(4..6)?.try_into().ok()?);
            return match sign {
                NAN => Some(NumSum::NaN),
                POSITIVE_INFINITY => Some(NumSum::Infinity(false)),
                NEGATIVE_INFINITY => Some(NumSum::Infinity(true)),
                _ => None,
            };
        }
        match std::str::from_utf8(raw).ok()? {
            "NaN" => Some(NumSum::NaN),
            "Infinity" => Some(NumSum::Infinity(false)),
            "-Infinity" => Some(NumSum::Infinity(true)),
            text => Num::parse(text).map(NumSum::Finite),
        }
    }

    pub(super) fn add(self, other: NumSum) -> NumSum {
        match (self, other) {
            (NumSum::Finite(a), NumSum::Finite(b)) => NumSum::Finite(a.add(&b)),
            (NumSum::NaN, _) | (_, NumSum::NaN) => NumSum::NaN,
            (NumSum::Infinity(a), NumSum::Infinity(b)) if a != b => NumSum::NaN,
            (inf @ NumSum::Infinity(_), _) | (_, inf @ NumSum::Infinity(_)) => inf,
        }
    }

    /// The average of `count` values summing to this (count > 0), as PostgreSQL's avg divides.
    pub(super) fn divided(&self, count: i64) -> NumSum {
        match self {
            NumSum::Finite(v) => NumSum::Finite(v.div_count(count)),
            other => other.clone(),
        }
    }

    /// The value in `format`, written as PostgreSQL writes it.
    pub(super) fn encode(&self, format: i16) -> Bytes {
        let special = |text: &'static str, sign: u16| {
            if format == 1 {
                let mut b = vec![0u8; 8];
                b[4..6].copy_from_slice(&sign.to_be_bytes());
                Bytes::from(b)
            } else {
                Bytes::from_static(text.as_bytes())
            }
        };
        match self {
            NumSum::Finite(v) => super::encode::encode_numeric(v, format),
            NumSum::NaN => special("NaN", NAN),
            NumSum::Infinity(false) => special("Infinity", POSITIVE_INFINITY),
            NumSum::Infinity(true) => special("-Infinity", NEGATIVE_INFINITY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NumSum;

    fn text(s: &str) -> NumSum {
        NumSum::read(s.as_bytes(), 0).unwrap()
    }

    fn sum(values: &[&str]) -> String {
        let total = values.iter().map(|v| text(v)).reduce(NumSum::add).unwrap();
        String::from_utf8(total.encode(0).to_vec()).unwrap()
    }

    #[test]
    fn special_values_add_as_postgresql_adds_them() {
        assert_eq!(sum(&["1.5", "2.25"]), "3.75");
        assert_eq!(sum(&["1", "NaN", "2"]), "NaN");
        assert_eq!(sum(&["1", "Infinity"]), "Infinity");
        assert_eq!(sum(&["-Infinity", "3", "-Infinity"]), "-Infinity");
        assert_eq!(sum(&["Infinity", "-Infinity"]), "NaN");
        assert_eq!(sum(&["Infinity", "NaN"]), "NaN");
        assert!(NumSum::read(b"nan", 0).is_none());
    }

    #[test]
    fn binary_special_values_round_trip() {
        for v in ["NaN", "Infinity", "-Infinity", "12.50"] {
            let binary = text(v).encode(1);
            assert_eq!(NumSum::read(&binary, 1).unwrap(), text(v), "{v}");
        }
        assert_eq!(text("Infinity").divided(3), text("Infinity"));
        assert_eq!(sum(&["10"]), "10");
    }
}
