//! Conversions between stored microseconds (UTC) and protobuf timestamps or RFC 3339 text.

pub use kizuna_proto::time::{from_timestamp, to_timestamp};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` or a bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = if text.len() == 10 {
        (text, "T00:00:00Z")
    } else {
        text.split_at_checked(10)?
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let hour: i64 = rest.get(0..2)?.parse().ok()?;
    let minute: i64 = rest.get(3..5)?.parse().ok()?;
    let second: i64 = rest.get(6..8)?.parse().ok()?;
    if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut tail = &rest[8..];
    let mut micros = 0_i64;
    if let Some(fraction) = tail.strip_prefix('.') {
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<6}", &digits[..digits.len().min(6)]);
        micros = padded.parse().ok()?;
        tail = &fraction[digits.len()..];
    }
    let offset_secs = match tail {
        "Z" | "z" => 0,
        _ => {
            let sign = match tail.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = tail.get(1..3)?.parse().ok()?;
            let om: i64 = tail.get(4..6)?.parse().ok()?;
            if tail.len() != 6 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    Some(seconds * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_micros("1970-01-01"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("2026-11-22T09:00:00+09:00"),
            parse_rfc3339_micros("2026-11-22T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T00:00:01.5Z"),
            Some(1_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000)
        );
        assert_eq!(parse_rfc3339_micros("yesterday"), None);
        assert_eq!(parse_rfc3339_micros("2026-13-01T00:00:00Z"), None);
    }
}
