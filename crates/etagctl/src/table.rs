//! Plain-text output for people: aligned columns, `name  value` pairs, byte sizes; and writing to stdout
//! without panicking when the reader (`head`, a closed pipe) goes away.

use std::io::Write;

/// Columns padded to their widest cell, two spaces apart, trailing spaces trimmed.
pub(crate) fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `name  value` lines with the names padded to the longest.
pub(crate) fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    rows.iter().map(|(name, value)| format!("{name:width$}  {value}").trim_end().to_owned() + "\n").collect()
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `yes` or `no`.
pub(crate) fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// An optional value, `-` when absent.
pub(crate) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Writes to stdout; a reader that went away is not an error worth a panic.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Pretty JSON and a newline to stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).expect("report types serialize to JSON");
    print(&(text + "\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["url".to_owned(), "http://h/".to_owned(), "yes".to_owned()],
            vec!["all".to_owned(), String::new(), "no".to_owned()],
        ];
        assert_eq!(
            columns(&["KIND", "NAME", "OK"], &rows),
            "KIND  NAME       OK\nurl   http://h/  yes\nall              no\n"
        );
    }

    #[test]
    fn pads_pairs() {
        assert_eq!(pairs(&[("etag", "\"x\"".into()), ("ttl left", "5s".into())]), "etag      \"x\"\nttl left  5s\n");
    }

    #[test]
    fn sizes() {
        let check = |n: u64, expected: &str| assert_eq!(bytes(n), expected);
        check(0, "0 B");
        check(1023, "1023 B");
        check(1536, "1.5 KiB");
        check(64 << 20, "64.0 MiB");
        check(3 << 30, "3.0 GiB");
    }
}
