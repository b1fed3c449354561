//! Dates and times written as text, read into the numbers their binary forms carry (days or
//! microseconds since 2000-01-01, microseconds since midnight), so that a column sorts alike
//! whichever format each shard was asked for. Only what the default DateStyle (ISO) writes is
//! read: the others write day and month in an order the text does not tell, and fail to
//! parse, which the merge reports rather than guess.

/// Days since 2000-01-01 of a text date (ISO DateStyle); `infinity` sorts last, `-infinity` first.
pub fn parse_date(s: &str) -> Option<i64> {
    match split_era(s)? {
        Era::Infinite(v) => Some(v),
        Era::Finite { body, bc } => civil_days(body, bc),
    }
}

/// A text date or timestamp: an infinity (as the sort value it stands for), or its text without
/// the ` BC` suffix.
enum Era<'a> {
    Infinite(i64),
    Finite { body: &'a str, bc: bool },
}

fn split_era(s: &str) -> Option<Era<'_>> {
    Some(match s {
        "infinity" => Era::Infinite(i64::MAX),
        "-infinity" => Era::Infinite(i64::MIN),
        _ => match s.strip_suffix(" BC") {
            Some(body) => Era::Finite { body, bc: true },
            None => Era::Finite { body: s, bc: false },
        },
    })
}

/// Days since 2000-01-01 of `YYYY-MM-DD` (year 1 BC is year 0 of the proleptic calendar).
/// Strictly that shape, as ISO DateStyle writes it (at least four digits of year, two of month
/// and day): `07-02-2024` of the Postgres style would read as another date.
fn civil_days(date: &str, bc: bool) -> Option<i64> {
    let mut dp = date.splitn(3, '-');
    let digits = |p: &str, min: usize, max: usize| {
        (p.len() >= min && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<i64>().ok())
            .flatten()
    };
    let mut year = digits(dp.next()?, 4, 9)?;
    let month = digits(dp.next()?, 2, 2).filter(|m| (1..=12).contains(m))?;
    let day = digits(dp.next()?, 2, 2).filter(|d| (1..=31).contains(d))?;
    if bc {
        year = 1 - year;
    }
    Some(days_from_civil(year, month, day) - PG_EPOCH_DAYS)
}

/// 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// Microseconds since 2000-01-01 (PostgreSQL's own representation, so every valid timestamp
/// fits, up to year 294276); `infinity` sorts last, `-infinity` first. Computed with checked
/// wide arithmetic: a value that does not fit is an error, never a wrapped number. ISO DateStyle
/// only (the default); other styles are refused by failing to parse.
pub fn parse_timestamp(s: &str, with_zone: bool) -> Option<i64> {
    let (body, bc) = match split_era(s)? {
        Era::Infinite(v) => return Some(v),
        Era::Finite { body, bc } => (body, bc),
    };
    let (date, rest) = body.split_at(body.find(' ').unwrap_or(body.len()));
    let days = i128::from(civil_days(date, bc)?);
    let rest = rest.trim();
    if rest.is_empty() {
        return i64::try_from(days * 86_400_000_000).ok();
    }
    // HH:MM:SS[.ffffff][+-HH[:MM[:SS]]]
    let zone_at = if with_zone {
        rest.rfind(['+', '-'])
    } else {
        None
    };
    let (time, zone) = match zone_at {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let mut tp = time.splitn(3, ':');
    let h: i64 = tp.next()?.parse().ok()?;
    let m: i64 = tp.next()?.parse().ok()?;
    let sec = tp.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().ok()?;
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse().ok()?
    };
    let (h, m, whole, micros) = (
        i128::from(h),
        i128::from(m),
        i128::from(whole),
        i128::from(micros),
    );
    let mut t = ((days * 24 + h) * 60 + m) * 60_000_000 + whole * 1_000_000 + micros;
    if let Some(z) = zone {
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let mut zp = z.get(1..)?.split(':');
        let zh: i128 = zp.next()?.parse().ok()?;
        let zm: i128 = zp.next().map(|v| v.parse().ok()).unwrap_or(Some(0))?;
        let zs: i128 = zp.next().map(|v| v.parse().ok()).unwrap_or(Some(0))?;
        t -= sign * ((zh * 60 + zm) * 60 + zs) * 1_000_000;
    }
    i64::try_from(t).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since midnight of a `time` as PostgreSQL writes it, `HH:MM:SS[.ffffff]`
/// (`24:00:00` included), or as a HAVING constant may give it, `HH:MM`.
pub fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let two = |p: &str| {
        (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<i64>().ok())
            .flatten()
    };
    let h = two(parts.next()?)?;
    let m = two(parts.next()?)?;
    let (whole, frac) = match parts.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            (two(whole)?, frac)
        }
        None => (0, ""),
    };
    Some(((h * 60 + m) * 60 + whole) * 1_000_000 + micros(frac)?)
}

/// A `timetz` as PostgreSQL orders it: by the UTC time, then by the zone (seconds west of
/// UTC), so that '10:00+01' and '09:00+00', the same UTC time, are ordered but not equal.
pub fn timetz_key(micros: i64, zone_west: i32) -> i128 {
    let utc = i128::from(micros) + i128::from(zone_west) * 1_000_000;
    (utc << 20) + i128::from(zone_west) + (1 << 19)
}

/// The key of a `timetz` in the binary form: microseconds, then the zone in seconds west.
pub fn timetz_binary(raw: &[u8]) -> Option<i128> {
    let time = i64::from_be_bytes(raw.get(0..8)?.try_into().ok()?);
    let zone = i32::from_be_bytes(raw.get(8..12)?.try_into().ok()?);
    (raw.len() == 12).then(|| timetz_key(time, zone))
}

/// The key of a `timetz` as PostgreSQL writes it: `HH:MM:SS[.ffffff]+HH[:MM[:SS]]`.
pub fn parse_timetz(s: &str) -> Option<i128> {
    let at = s.rfind(['+', '-'])?;
    let (time, zone) = (parse_time(&s[..at])?, &s[at..]);
    let east = zone.starts_with('+');
    let mut parts = zone[1..].split(':');
    let mut seconds = 0i32;
    for unit in [3600, 60, 1] {
        if let Some(p) = parts.next() {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            seconds += p.parse::<i32>().ok()? * unit;
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(timetz_key(time, if east { -seconds } else { seconds }))
}

/// Six digits of fraction, padded: `5` is 500000 microseconds.
pub(super) fn micros(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    format!("{frac:0<6}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_only_as_iso_writes_them() {
        assert!(parse_date("2024-02-07").is_some());
        assert!(parse_date("0099-01-01 BC").is_some());
        assert!(parse_date("5874897-12-31").is_some());
        // Postgres and SQL styles, which name day and month in either order.
        for other in [
            "07-02-2024",
            "02-07-2024",
            "02/07/2024",
            "07.02.2024",
            "2024-2-7",
        ] {
            assert_eq!(parse_date(other), None, "{other}");
        }
        assert_eq!(parse_timestamp("07-02-2024 03:00:00", false), None);
    }

    #[test]
    fn times_read_as_microseconds_since_midnight() {
        assert_eq!(parse_time("00:00:01"), Some(1_000_000));
        assert_eq!(
            parse_time("13:45:00.25"),
            Some((13 * 60 + 45) * 60_000_000 + 250_000)
        );
        assert_eq!(parse_time("24:00:00"), Some(86_400_000_000));
        assert_eq!(parse_time("13:45"), parse_time("13:45:00"));
        for other in [
            "1:00:00",
            "13",
            "13:45:00+02",
            "01:02:03.1234567",
            "1:00 PM",
        ] {
            assert_eq!(parse_time(other), None, "{other}");
        }
    }

    #[test]
    fn timetz_orders_by_utc_time_then_zone() {
        let ascending = [
            "09:00:00+00",
            "10:00:00+01",
            "08:00:00-02",
            "12:30:00+05:30",
        ];
        let keys: Vec<i128> = ascending.iter().map(|t| parse_timetz(t).unwrap()).collect();
        // 09:00 UTC twice (ordered by zone: east of UTC first, as its zone west is smaller),
        // then 10:00 UTC, then 07:00 UTC... sorted as PostgreSQL sorts them:
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [keys[3], keys[1], keys[0], keys[2]],
            "07:00 UTC, 09:00 UTC (+01 before +00), 10:00 UTC"
        );
        let mut raw = Vec::new();
        raw.extend_from_slice(&(10 * 3_600_000_000i64).to_be_bytes());
        raw.extend_from_slice(&(-3600i32).to_be_bytes());
        assert_eq!(timetz_binary(&raw), parse_timetz("10:00:00+01"));
        for other in ["10:00:00", "10:00:00+1", "10:00:00+01:00:00:00"] {
            assert_eq!(parse_timetz(other), None, "{other}");
        }
    }
}
