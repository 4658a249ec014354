//! Times the user types (`--since`): RFC 3339 timestamps or a span before now, turned into
//! seconds since the epoch (the API's unit). Proleptic Gregorian calendar, no leap seconds.

use anyhow::{anyhow, bail, Result};

/// `s` as seconds since the epoch: RFC 3339 (`2026-12-01T09:30:00Z`, `...+02:00`, fractions
/// dropped; a space for the `T` is accepted), or a span before `now` (`90s`, `10m`, `2h`,
/// `7d`, `2w`).
pub fn parse_since(s: &str, now: u64) -> Result<u64> {
    let s = s.trim();
    if let Some(span) = span_seconds(s) {
        return Ok(now.saturating_sub(span));
    }
    rfc3339(s).ok_or_else(|| {
        anyhow!(
            "invalid_argument: --since {s:?}: give an RFC 3339 time (2026-12-01T09:30:00Z) \
             or a span before now (10m, 2h, 7d)"
        )
    })
}

/// `10m`-style spans in seconds.
fn span_seconds(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// An RFC 3339 date-time in seconds since the epoch (none before 1970).
fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    if sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.as_bytes();
            if o.len() != 6 || o[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset;
    u64::try_from(t).ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses a time in the future (a typo, or a clock far off), which would list nothing.
pub fn not_future(t: u64, now: u64) -> Result<u64> {
    if t > now + 60 {
        bail!("invalid_argument: --since is in the future");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_and_spans() {
        let now = 1_796_118_420; // 2026-12-01T09:47:00Z
        assert_eq!(parse_since("2026-12-01T09:47:00Z", 0).unwrap(), now);
        assert_eq!(parse_since("2026-12-01 09:47:00.123Z", 0).unwrap(), now);
        assert_eq!(parse_since("2026-12-01T11:47:00+02:00", 0).unwrap(), now);
        assert_eq!(parse_since("1970-01-01T00:00:00Z", 5).unwrap(), 0);
        assert_eq!(parse_since("2000-02-29T00:00:00Z", 0).unwrap(), 951_782_400);
        assert_eq!(parse_since("10m", now).unwrap(), now - 600);
        assert_eq!(parse_since("2d", now).unwrap(), now - 172_800);
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-01",
            "yesterday",
            "10x",
            "2026-12-01T09:47:00",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
