//! Intervals as the merge needs them: read from either format, compared by their span, added
//! and divided as PostgreSQL's `+` and avg do, and written back in the format the client asked
//! for. Text is read and written as IntervalStyle postgres (the default) writes it; text in
//! another style fails to parse, which the merge reports rather than guess.

use super::datetime::parse_time;

const USECS_PER_HOUR: i64 = 3_600_000_000;
const USECS_PER_DAY: i128 = 86_400_000_000;
const SECS_PER_DAY: f64 = 86_400.0;

/// PostgreSQL's interval: months, days and microseconds, each kept apart (a month is not a
/// fixed number of days, nor a day of hours, across a daylight-saving change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// What PostgreSQL says when an interval leaves its range.
pub const OUT_OF_RANGE: &str = "interval out of range";

impl Interval {
    /// The span PostgreSQL compares intervals by: the time plus the days and months counted as
    /// 30 days each ('1 mon' = '30 days', '1 day' = '24:00:00').
    pub fn span(&self) -> i128 {
        i128::from(self.micros)
            + (i128::from(self.days) + i128::from(self.months) * 30) * USECS_PER_DAY
    }

    /// The binary form: microseconds, days, months.
    pub fn from_binary(raw: &[u8]) -> Option<Interval> {
        if raw.len() != 16 {
            return None;
        }
        Some(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into().ok()?),
            days: i32::from_be_bytes(raw[8..12].try_into().ok()?),
            months: i32::from_be_bytes(raw[12..16].try_into().ok()?),
        })
    }

    pub fn to_binary(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.micros.to_be_bytes());
        out.extend_from_slice(&self.days.to_be_bytes());
        out.extend_from_slice(&self.months.to_be_bytes());
        out
    }

    /// As IntervalStyle postgres writes it: `1 year 2 mons -3 days +04:05:06.5`, `00:00:00`,
    /// `-1 days +02:00:00`, `100:00:00`.
    pub fn parse(s: &str) -> Option<Interval> {
        let (mut months, mut days, mut time) = (0i32, 0i32, 0i64);
        let mut words = s.split(' ');
        let mut seen_time = false;
        while let Some(w) = words.next() {
            if w.contains(':') {
                if seen_time {
                    return None;
                }
                seen_time = true;
                let (neg, body) = match w.as_bytes().first()? {
                    b'-' => (true, &w[1..]),
                    b'+' => (false, &w[1..]),
                    _ => (false, w),
                };
                // Hours may run past 24 (`100:00:00`); minutes and seconds may not.
                let mut parts = body.splitn(3, ':');
                let h: i64 = parts
                    .next()
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?
                    .parse()
                    .ok()?;
                let rest = format!("00:{}:{}", parts.next()?, parts.next()?);
                let t = h
                    .checked_mul(USECS_PER_HOUR)?
                    .checked_add(parse_time(&rest)?)?;
                time = if neg { -t } else { t };
                continue;
            }
            if seen_time {
                return None;
            }
            let n: i32 = w.strip_prefix('+').unwrap_or(w).parse().ok()?;
            match words.next()? {
                "year" | "years" => months = months.checked_add(n.checked_mul(12)?)?,
                "mon" | "mons" => months = months.checked_add(n)?,
                "day" | "days" => days = days.checked_add(n)?,
                _ => return None,
            }
        }
        Some(Interval {
            months,
            days,
            micros: time,
        })
    }

    /// As IntervalStyle postgres writes it (PostgreSQL's `EncodeInterval`): years and months
    /// from the months, then days, then the time if it is not zero or nothing came before;
    /// a positive part after a negative one gets a `+`.
    pub fn to_text(self) -> String {
        let mut out = String::new();
        let mut nothing_yet = true;
        let mut after_negative = false;
        let mut part = |out: &mut String, value: i64, unit: &str| {
            if value == 0 {
                return;
            }
            if !nothing_yet {
                out.push(' ');
            }
            if after_negative && value > 0 {
                out.push('+');
            }
            out.push_str(&format!(
                "{value} {unit}{}",
                if value != 1 { "s" } else { "" }
            ));
            after_negative = value < 0;
            nothing_yet = false;
        };
        let months = i64::from(self.months);
        part(&mut out, months / 12, "year");
        part(&mut out, months % 12, "mon");
        part(&mut out, i64::from(self.days), "day");
        let t = self.micros;
        let (hours, rest) = (t / USECS_PER_HOUR, t % USECS_PER_HOUR);
        let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (seconds, fraction) = (rest / 1_000_000, rest % 1_000_000);
        if nothing_yet || t != 0 {
            if !nothing_yet {
                out.push(' ');
            }
            if t < 0 {
                out.push('-');
            } else if after_negative {
                out.push('+');
            }
            out.push_str(&format!(
                "{:02}:{:02}:{:02}",
                hours.unsigned_abs(),
                minutes.unsigned_abs(),
                seconds.unsigned_abs()
            ));
            if fraction != 0 {
                let digits = format!("{:06}", fraction.unsigned_abs());
                out.push('.');
                out.push_str(digits.trim_end_matches('0'));
            }
        }
        out
    }

    /// `self + other`, as PostgreSQL's `+` adds intervals: each part apart, an overflow of any
    /// an error.
    pub fn checked_add(self, other: Interval) -> Option<Interval> {
        Some(Interval {
            months: self.months.checked_add(other.months)?,
            days: self.days.checked_add(other.days)?,
            micros: self.micros.checked_add(other.micros)?,
        })
    }

    /// `self / factor` as PostgreSQL's `interval / float8` (`interval_div`) computes it, which
    /// avg(interval) divides its sum by the count with: whole months and days kept, their
    /// fractions carried down into days and seconds, rounded to microseconds.
    pub fn divided_by(self, factor: f64) -> Option<Interval> {
        if factor == 0.0 || factor.is_nan() {
            return None;
        }
        let in_i32 = |v: f64| {
            (-2_147_483_648.0..2_147_483_648.0)
                .contains(&v)
                .then_some(v as i32)
        };
        let month_q = f64::from(self.months) / factor;
        let months = in_i32(month_q)?;
        let day_q = f64::from(self.days) / factor;
        let mut days = in_i32(day_q)?;
        let month_remainder_days = ts_round((month_q - f64::from(months)) * 30.0);
        let mut sec_remainder = ts_round(
            (day_q - f64::from(days) + month_remainder_days
                - f64::from(month_remainder_days as i32))
                * SECS_PER_DAY,
        );
        if sec_remainder.abs() >= SECS_PER_DAY {
            let whole = (sec_remainder / SECS_PER_DAY) as i32;
            days = days.checked_add(whole)?;
            sec_remainder -= f64::from(whole) * SECS_PER_DAY;
        }
        days = days.checked_add(month_remainder_days as i32)?;
        let micros = (self.micros as f64 / factor + sec_remainder * 1_000_000.0).round_ties_even();
        if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&micros) {
            return None;
        }
        Some(Interval {
            months,
            days,
            micros: micros as i64,
        })
    }
}

/// PostgreSQL's `TSROUND`: to microsecond precision, as `rint(x * 1e6) / 1e6`.
fn ts_round(x: f64) -> f64 {
    (x * 1_000_000.0).round_ties_even() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> Interval {
        Interval::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn intervals_compare_by_span_as_postgresql_does() {
        let day = USECS_PER_DAY;
        assert_eq!(iv("00:00:00").span(), 0);
        assert_eq!(iv("1 day").span(), iv("24:00:00").span());
        assert_eq!(iv("1 mon").span(), iv("30 days").span());
        assert_eq!(iv("1 year").span(), 360 * day);
        assert_eq!(
            iv("1 year 2 mons -3 days +04:05:06.5").span(),
            (360 + 60 - 3) * day + ((4 * 60 + 5) * 60 + 6) * 1_000_000 + 500_000
        );
        assert_eq!(iv("-1 days +02:00:00").span(), -day + 2 * 3_600_000_000);
        assert_eq!(iv("-00:00:01").span(), -1_000_000);
        assert_eq!(iv("100:00:00").span(), 100 * 3_600_000_000);
        // Other styles: sql_standard, iso_8601, postgres_verbose.
        for other in [
            "1-2 3 4:05:06",
            "P1Y2M3DT4H5M6S",
            "@ 1 day ago",
            "1 hour",
            "3",
        ] {
            assert_eq!(Interval::parse(other), None, "{other}");
        }
        let i = iv("1 mon 2 days 00:00:07");
        assert_eq!(Interval::from_binary(&i.to_binary()), Some(i));
        assert_eq!(Interval::from_binary(&i.to_binary()[..15]), None);
    }

    #[test]
    fn text_is_written_as_postgresql_writes_it() {
        // Each as PostgreSQL 15 prints it under IntervalStyle postgres.
        for text in [
            "00:00:00",
            "1 day",
            "2 days",
            "1 mon",
            "1 year",
            "1 year 2 mons",
            "1 year 2 mons -3 days +04:05:06.5",
            "-1 days +02:00:00",
            "-00:00:01",
            "100:00:00",
            "-1 years -2 mons",
            "-1 mons +1 day",
            "1 day -00:00:00.000001",
            "3 days 00:00:00.25",
            "-2 years -3 days -01:00:00",
        ] {
            assert_eq!(iv(text).to_text(), text);
        }
    }

    #[test]
    fn sums_and_averages_as_postgresql_computes_them() {
        let sum = iv("1 mon 1 day 01:00:00")
            .checked_add(iv("2 days -00:30:00"))
            .unwrap();
        assert_eq!(sum.to_text(), "1 mon 3 days 00:30:00");
        assert_eq!(
            Interval {
                months: i32::MAX,
                ..Interval::default()
            }
            .checked_add(iv("1 mon")),
            None
        );
        // avg('1 mon', '1 day') is '15 days 12:00:00' in PostgreSQL.
        let pair = iv("1 mon").checked_add(iv("1 day")).unwrap();
        assert_eq!(pair.divided_by(2.0).unwrap().to_text(), "15 days 12:00:00");
        // avg of '1 day', '2 days', '2 days' is '1 day 16:00:00'.
        assert_eq!(
            iv("5 days").divided_by(3.0).unwrap().to_text(),
            "1 day 16:00:00"
        );
        assert_eq!(
            iv("00:00:01").divided_by(3.0).unwrap().to_text(),
            "00:00:00.333333"
        );
        // The fractions carried down in double precision, as PostgreSQL carries them.
        assert_eq!(
            iv("1 year").divided_by(7.0).unwrap().to_text(),
            "1 mon 21 days 10:17:08.5344"
        );
        assert_eq!(iv("1 day").divided_by(0.0), None);
    }
}
