//! Dates and timestamps written as ISO text, the form PostgreSQL reads the same under every
//! DateStyle: from the proleptic Gregorian day counts and microseconds that the wire's binary
//! forms and the system clock give. Years before 1 are written as PostgreSQL writes them, with
//! ` BC` (year 0 is 1 BC); the largest and smallest values are PostgreSQL's infinities.

/// 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

const DAY_MICROS: i64 = 86_400_000_000;

/// A date bound in binary (days since 2000-01-01) as `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => day_text(i64::from(d) + PG_EPOCH_DAYS),
    }
}

/// A timestamp bound in binary (microseconds since 2000-01-01) as `YYYY-MM-DD HH:MM:SS.ffffff`,
/// in UTC with `+00` after it when `with_zone`.
pub fn timestamp_text(micros: i64, with_zone: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        m => {
            let days = m.div_euclid(DAY_MICROS) + PG_EPOCH_DAYS;
            utc_text(days, m.rem_euclid(DAY_MICROS), with_zone)
        }
    }
}

/// A moment given as microseconds since 1970-01-01, as UTC with `+00`.
pub fn unix_micros_text(micros: i64) -> String {
    utc_text(
        micros.div_euclid(DAY_MICROS),
        micros.rem_euclid(DAY_MICROS),
        true,
    )
}

/// Days since 1970-01-01 and microseconds into that day.
fn utc_text(days: i64, of_day: i64, with_zone: bool) -> String {
    let (date, bc) = day_parts(days);
    let secs = of_day / 1_000_000;
    format!(
        "{date} {:02}:{:02}:{:02}.{:06}{}{}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        of_day % 1_000_000,
        if with_zone { "+00" } else { "" },
        if bc { " BC" } else { "" },
    )
}

fn day_text(days: i64) -> String {
    match day_parts(days) {
        (date, true) => format!("{date} BC"),
        (date, false) => date,
    }
}

/// `YYYY-MM-DD` of a day since 1970-01-01, and whether the year is BC.
fn day_parts(days: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days);
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    (format!("{year:04}-{m:02}-{d:02}"), bc)
}

/// Year, month and day of a day counted from 1970-01-01 (the proleptic Gregorian calendar,
/// after Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_dates_and_timestamps_read_as_postgresql_writes_them() {
        assert_eq!(date_text(0), "2000-01-01");
        assert_eq!(date_text(-1), "1999-12-31");
        assert_eq!(date_text(8_825), "2024-02-29");
        // 0001-01-01 is day -730119; the day before is 1 BC's last.
        assert_eq!(date_text(-730_119), "0001-01-01");
        assert_eq!(date_text(-730_120), "0001-12-31 BC");
        assert_eq!(date_text(i32::MAX), "infinity");
        assert_eq!(timestamp_text(0, false), "2000-01-01 00:00:00.000000");
        assert_eq!(timestamp_text(-1, true), "1999-12-31 23:59:59.999999+00");
        assert_eq!(
            timestamp_text(86_400_000_000 + 3_723_000_001, true),
            "2000-01-02 01:02:03.000001+00"
        );
        assert_eq!(timestamp_text(i64::MIN, true), "-infinity");
        assert_eq!(unix_micros_text(0), "1970-01-01 00:00:00.000000+00");
    }
}
