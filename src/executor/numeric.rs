//! Exact decimal arithmetic for combining partial aggregates, matching PostgreSQL's numeric:
//! sums keep the largest input scale, and division (for avg) picks its result scale with
//! PostgreSQL's `select_div_scale` rule and rounds half away from zero, so `avg` through the proxy
//! prints exactly what one PostgreSQL prints. Also PostgreSQL's float output format.

use num_bigint::BigInt;
use num_bigint::Sign;

/// `mantissa / 10^scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Num {
    mantissa: BigInt,
    scale: u32,
}

impl Num {
    pub fn zero() -> Num {
        Num {
            mantissa: BigInt::from(0),
            scale: 0,
        }
    }

    /// numeric's text form (finite values only).
    pub fn parse(s: &str) -> Option<Num> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = format!("{int}{frac}");
        if digits.is_empty()
            || !digits
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Num {
            mantissa: digits.parse().ok()?,
            scale: frac.len() as u32,
        })
    }

    pub fn from_i64(v: i64) -> Num {
        Num {
            mantissa: BigInt::from(v),
            scale: 0,
        }
    }

    fn rescale(&self, scale: u32) -> BigInt {
        &self.mantissa * BigInt::from(10).pow(scale - self.scale)
    }

    pub fn add(&self, other: &Num) -> Num {
        let scale = self.scale.max(other.scale);
        Num {
            mantissa: self.rescale(scale) + other.rescale(scale),
            scale,
        }
    }

    /// The absolute value's integer digits (at least one) and its `scale` fractional digits.
    fn digits(&self) -> (String, String) {
        let digits = self.mantissa.magnitude().to_string();
        let scale = self.scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        (int.to_string(), frac.to_string())
    }

    /// Text with exactly `scale` fractional digits, as numeric prints.
    pub fn to_text(&self) -> String {
        let negative = self.mantissa.sign() == Sign::Minus;
        let scale = self.scale as usize;
        let (int, frac) = self.digits();
        let (int, frac) = (int.as_str(), frac.as_str());
        let sign = if negative { "-" } else { "" };
        if scale == 0 {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// From numeric's binary form (ndigits, weight, sign, dscale, base-10000 digits). NaN and
    /// infinities are not finite values and give None.
    pub fn from_binary(b: &[u8]) -> Option<Num> {
        let word = |i: usize| -> Option<u16> {
            Some(u16::from_be_bytes(
                b.get(2 * i..2 * i + 2)?.try_into().ok()?,
            ))
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16 as i64;
        let sign = word(2)?;
        let dscale = word(3)? as u32;
        if sign != 0x0000 && sign != 0x4000 {
            return None;
        }
        let mut big = BigInt::from(0);
        for i in 0..ndigits {
            big = big * 10_000 + BigInt::from(word(4 + i)?);
        }
        // big * 10000^(weight - ndigits + 1), as mantissa / 10^dscale.
        let exp10 = 4 * (weight - ndigits as i64 + 1) + dscale as i64;
        let mantissa = if exp10 >= 0 {
            big * BigInt::from(10).pow(exp10 as u32)
        } else {
            big / BigInt::from(10).pow((-exp10) as u32)
        };
        let mantissa = if sign == 0x4000 { -mantissa } else { mantissa };
        Some(Num {
            mantissa,
            scale: dscale,
        })
    }

    /// numeric's binary form.
    pub fn to_binary(&self) -> Vec<u8> {
        let (int, frac) = self.digits();
        let int_groups = int.len().div_ceil(4);
        let int = format!("{int:0>width$}", width = int_groups * 4);
        let frac = format!("{frac:0<width$}", width = frac.len().div_ceil(4) * 4);
        let mut groups: Vec<u16> = int
            .as_bytes()
            .chunks(4)
            .chain(frac.as_bytes().chunks(4))
            .map(|c| {
                std::str::from_utf8(c)
                    .expect("digits")
                    .parse()
                    .expect("digits")
            })
            .collect();
        let mut weight = int_groups as i64 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let sign: u16 = if self.mantissa.sign() == Sign::Minus {
            0x4000
        } else {
            0
        };
        let mut out = Vec::with_capacity(8 + 2 * groups.len());
        for w in [
            groups.len() as u16,
            weight as i16 as u16,
            sign,
            self.scale as u16,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    /// Weight and first digit in base 10000 (PostgreSQL's NBASE), of the absolute value.
    fn nbase_head(&self) -> (i64, u32) {
        let digits = self.mantissa.magnitude().to_string();
        if digits.chars().all(|c| c == '0') {
            return (0, 0);
        }
        let scale = self.scale as usize;
        let (int, frac) = if digits.len() > scale {
            digits.split_at(digits.len() - scale)
        } else {
            ("", digits.as_str())
        };
        let frac = format!("{}{frac}", "0".repeat(scale - frac.len()));
        let int = int.trim_start_matches('0');
        if !int.is_empty() {
            let groups = int.len().div_ceil(4);
            let head_len = int.len() - (groups - 1) * 4;
            return (
                (groups - 1) as i64,
                int[..head_len].parse().expect("digits"),
            );
        }
        let frac = format!("{frac:0<width$}", width = frac.len().div_ceil(4) * 4);
        for (k, chunk) in frac.as_bytes().chunks(4).enumerate() {
            let v: u32 = std::str::from_utf8(chunk)
                .expect("digits")
                .parse()
                .expect("digits");
            if v != 0 {
                return (-(k as i64) - 1, v);
            }
        }
        (0, 0)
    }

    /// `self / count` as PostgreSQL's numeric_div computes it (avg = sum / count).
    pub fn div_count(&self, count: i64) -> Num {
        let divisor = Num::from_i64(count);
        let (w1, f1) = self.nbase_head();
        let (w2, f2) = divisor.nbase_head();
        let mut qweight = w1 - w2;
        if f1 <= f2 {
            qweight -= 1;
        }
        let rscale = (16 - qweight * 4).max(self.scale as i64).clamp(0, 1000) as u32;
        // |self| * 10^rscale / (10^scale * count), rounded half away from zero.
        let numerator = self.mantissa.magnitude() * num_bigint::BigUint::from(10u32).pow(rscale);
        let denominator = num_bigint::BigUint::from(10u32).pow(self.scale) * count.unsigned_abs();
        let mut q = &numerator / &denominator;
        let r = &numerator % &denominator;
        if r * 2u32 >= denominator {
            q += 1u32;
        }
        let negative = (self.mantissa.sign() == Sign::Minus) != (count < 0);
        let sign = if negative && q != num_bigint::BigUint::from(0u32) {
            Sign::Minus
        } else {
            Sign::Plus
        };
        Num {
            mantissa: BigInt::from_biguint(sign, q),
            scale: rscale,
        }
    }
}

/// float8 as PostgreSQL prints it (shortest exact form; exponent form outside 1e-4 .. 1e15).
pub fn float8_text(v: f64) -> String {
    float_text(v, 15, format!("{v:e}"), format!("{v}"))
}

/// float4 likewise (exponent form from 1e6).
pub fn float4_text(v: f32) -> String {
    float_text(v as f64, 6, format!("{v:e}"), format!("{v}"))
}

fn float_text(v: f64, digits: i32, sci: String, plain: String) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("exponent");
    if exp < -4 || exp >= digits {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avg(sum: &str, n: i64) -> String {
        Num::parse(sum).unwrap().div_count(n).to_text()
    }

    // Expected values as printed by PostgreSQL 15.18 (select 10::numeric/3, avg(...), ...).
    #[test]
    fn division_matches_postgres() {
        assert_eq!(avg("3", 2), "1.5000000000000000");
        assert_eq!(avg("10", 3), "3.3333333333333333");
        assert_eq!(avg("20000", 3), "6666.6666666666666667");
        assert_eq!(avg("1", 3), "0.33333333333333333333");
        assert_eq!(avg("-7.50", 2), "-3.7500000000000000");
        assert_eq!(avg("0", 5), "0.00000000000000000000");
        assert_eq!(avg("123456789012", 7), "17636684144.57142857");
        assert_eq!(avg("5", 3), "1.6666666666666667");
        assert_eq!(avg("3.75", 2), "1.8750000000000000");
    }

    #[test]
    fn sums_keep_the_largest_scale() {
        let s = Num::parse("1.5")
            .unwrap()
            .add(&Num::parse("-3.25").unwrap())
            .add(&Num::parse("10").unwrap());
        assert_eq!(s.to_text(), "8.25");
        assert_eq!(
            Num::parse("0.05")
                .unwrap()
                .add(&Num::parse("-0.10").unwrap())
                .to_text(),
            "-0.05"
        );
    }

    #[test]
    fn binary_round_trips() {
        for text in [
            "0",
            "1",
            "-1",
            "12345.678",
            "0.0001",
            "-0.05",
            "10000",
            "123456789012345678901234567890.5",
            "1.50",
        ] {
            let n = Num::parse(text).unwrap();
            assert_eq!(
                Num::from_binary(&n.to_binary()).unwrap().to_text(),
                text,
                "{text}"
            );
        }
        // 12345.678 as PostgreSQL sends it: 3 digits, weight 1, +, dscale 3: 1 2345 6780.
        let pg: Vec<u8> = [3u16, 1, 0, 3, 1, 2345, 6780]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(Num::from_binary(&pg).unwrap().to_text(), "12345.678");
        assert_eq!(Num::parse("12345.678").unwrap().to_binary(), pg);
    }

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(float8_text(1.5), "1.5");
        assert_eq!(float8_text(1e20), "1e+20");
        assert_eq!(float8_text(0.00001), "1e-05");
        assert_eq!(float8_text(123456.0), "123456");
        assert_eq!(float8_text(f64::NAN), "NaN");
        assert_eq!(float4_text(1234567.0), "1.234567e+06");
        assert_eq!(float8_text(0.1 + 0.2), "0.30000000000000004");
    }
}
