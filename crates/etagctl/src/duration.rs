//! Durations as operators type them: `500ms`, `2s`, `1m`, `1h`, or a bare number of seconds.

use std::time::Duration;

/// Parses `<integer>[ms|s|m|h]`; a bare integer is seconds.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration: write it as 500ms, 2s, 1m or 1h");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit.trim() {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// A `--timeout`: above zero.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        Duration::ZERO => Err("the timeout must be above 0, e.g. 2s".to_owned()),
        timeout => Ok(timeout),
    }
}

/// A `--grace` period in whole seconds (rounded up, since the store counts seconds); at least one.
pub(crate) fn parse_grace(text: &str) -> Result<u64, String> {
    let grace = parse(text)?;
    if grace.is_zero() {
        return Err("the grace period must be at least 1s; leave --grace out for a hard flush".to_owned());
    }
    Ok(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
}

/// A short human form: `1.5s`, `250ms`.
pub(crate) fn show(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse(text).ok().map(|d| d.as_millis() as u64), expected, "{text}");
        };
        check("2s", Some(2_000));
        check("500ms", Some(500));
        check("1m", Some(60_000));
        check("1h", Some(3_600_000));
        check("30", Some(30_000));
        check(" 3s ", Some(3_000));
        check("0", Some(0));
        check("", None);
        check("s", None);
        check("2 days", None);
        check("-1s", None);
        check("1.5s", None);
        check("99999999999999999999h", None);
    }

    #[test]
    fn timeouts_and_grace_periods() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("0s").is_err());
        let check = |text: &str, expected: Option<u64>| assert_eq!(parse_grace(text).ok(), expected, "{text}");
        check("30s", Some(30));
        check("1500ms", Some(2));
        check("2m", Some(120));
        check("0", None);
        check("x", None);
    }

    #[test]
    fn shows_durations() {
        let check = |millis: u64, expected: &str| assert_eq!(show(Duration::from_millis(millis)), expected);
        check(2_000, "2s");
        check(250, "250ms");
        check(1_500, "1.5s");
    }
}
