//! HTTP dates (RFC 9110 section 5.6.7) read as a cache must: all three formats (IMF-fixdate, RFC 850,
//! asctime), words in any case (RFC 9111 section 4.2 asks caches to be lenient), and an RFC 850 two-digit year
//! that would lie more than 50 years ahead taken as the most recent past year with those digits.
//!
//! `httpdate` reads the fixed formats; it maps two-digit years below 70 to 20xx and the rest to 19xx, and
//! rejects a weekday that does not match, so RFC 850 dates are read here instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads an HTTP date; `now` decides the century of an RFC 850 year. `None` when it is not a date.
pub fn parse(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim_matches([' ', '\t']);
    if let Some(date) = rfc850(text, now) {
        return Some(date);
    }
    httpdate::parse_http_date(text).ok().or_else(|| httpdate::parse_http_date(&canonical_case(text)).ok())
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`, in any case. The weekday is not checked against the date: a cache reads
/// dates leniently, and the year it implies is the one in doubt.
fn rfc850(text: &str, now: SystemTime) -> Option<SystemTime> {
    let (weekday, rest) = text.split_once(", ")?;
    // Full weekday names have 6 to 9 letters; IMF-fixdate's have 3.
    if !(6..=9).contains(&weekday.len()) || !weekday.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    // Dates are ASCII; checking first keeps the byte positions below on character boundaries (a client's
    // `If-Modified-Since` may carry any bytes).
    if !rest.is_ascii() {
        return None;
    }
    let b = rest.as_bytes();
    let shape = b.len() == 22
        && b[2] == b'-'
        && b[6] == b'-'
        && b[9] == b' '
        && b[12] == b':'
        && b[15] == b':'
        && rest[18..].eq_ignore_ascii_case(" GMT");
    if !shape {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = rest.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok()).flatten()
    };
    let (day, two_digit_year) = (number(0..2)?, number(7..9)?);
    let (hour, minute, second) = (number(10..12)?, number(13..15)?, number(16..18)?);
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(&rest[3..6]))? as i64 + 1;
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let year = century(two_digit_year, current_year(now)?);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 9110 section 5.6.7: a year more than 50 years in the future is the most recent past one with the same
/// last two digits.
fn century(two_digit_year: i64, current_year: i64) -> i64 {
    let year = current_year - current_year.rem_euclid(100) + two_digit_year;
    if year > current_year + 50 { year - 100 } else { year }
}

fn current_year(now: SystemTime) -> Option<i64> {
    // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`, the year at bytes 12..16.
    httpdate::fmt_http_date(now).get(12..16)?.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based algorithm: 400-year eras of 146097 days).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Writes the words of a date the way HTTP-date spells them: `Tue`, `Nov`, `GMT`.
fn canonical_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else if let Some(first) = word.chars().next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(&word[first.len_utf8()..].to_ascii_lowercase());
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(imf: &str) -> SystemTime {
        httpdate::parse_http_date(imf).unwrap()
    }

    /// RFC 9110 section 5.6.7: a date is ASCII, so other bytes where one belongs are no date (and never a
    /// panic: the text comes from a client's `If-Modified-Since`).
    #[test]
    fn non_ascii_bytes_where_a_date_belongs_read_as_no_date() {
        // Found by the `if_none_match` fuzz target: an RFC 850 shape whose 19th byte falls inside a character.
        let now = at("Tue, 01 Dec 2026 00:00:00 GMT");
        assert_eq!(parse("Tusday, 24-Nov-26 10:00:0\u{433}\u{171}T", now), None);
        assert_eq!(parse("Tusday, 24-N\u{f6}v-26 10:00:00 GMT", now), None);
    }

    /// RFC 9110 section 5.6.7: the three formats, and the 50-year rule for RFC 850 years.
    #[test]
    fn every_format_and_the_fifty_year_rule() {
        let now = at("Tue, 01 Dec 2026 12:00:00 GMT");
        let cases = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            ("Sun Nov  6 08:49:37 1994", Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            ("sunday, 06-NOV-94 08:49:37 gmt", Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            ("SUN, 06 nov 1994 08:49:37 Gmt", Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            // 2070 is 44 years ahead: this century. 2077 would be 51: the last century.
            ("Wednesday, 01-Jan-70 00:00:00 GMT", Some("Wed, 01 Jan 2070 00:00:00 GMT")),
            ("Thursday, 01-Jan-76 00:00:00 GMT", Some("Wed, 01 Jan 2076 00:00:00 GMT")),
            ("Saturday, 01-Jan-77 00:00:00 GMT", Some("Sat, 01 Jan 1977 00:00:00 GMT")),
            ("Tuesday, 29-Feb-28 10:00:00 GMT", Some("Tue, 29 Feb 2028 10:00:00 GMT")),
            ("Tuesday, 24-Nov-26 11:00:00 GMT", Some("Tue, 24 Nov 2026 11:00:00 GMT")),
            ("Tuesday, 24-Foo-26 11:00:00 GMT", None),
            ("Tuesday, 24-Nov-26 25:00:00 GMT", None),
            ("next tuesday", None),
            ("0", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text, now), expected.map(at), "{text}");
        }
    }
}
