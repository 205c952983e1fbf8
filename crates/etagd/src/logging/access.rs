//! The access log: one line per request, written straight from the exchange's [`Report`] (the sidecar's
//! observer takes the line over from the library's `etagd::access` event, so no subscriber dispatch or field
//! visiting runs per request). The line is the one `tracing-subscriber`'s formatter wrote for that event (text
//! or JSON, same fields, same order, same target), with less work: the timestamp's seconds formatted once a
//! second, numbers without `core::fmt`, the line built in a reused buffer and appended to the [`Sink`] whole.
//! `ETAGD_LOG` still decides: the lines are written when it enables `etagd::access` at info (requests) or
//! debug (background refreshes), as read once at start.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etagd_client::exchange::{Observer, Report};

use super::sink::Sink;

/// The target of access log lines (and of the library's events, were it writing them).
pub const TARGET: &str = "etagd::access";

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `<time> <LEVEL> etagd::access: request key=value ...`, as `tracing-subscriber`'s full format.
    Text,
    /// `{"timestamp":..,"level":..,"fields":{"message":..,..},"target":"etagd::access"}`, as its JSON format.
    Json,
}

/// Writes access lines to the sink.
pub struct AccessLog {
    sink: Sink,
    shape: Shape,
    /// `ETAGD_LOG` enables `etagd::access` at info: a line per request.
    requests: bool,
    /// ... and at debug: a line per background refresh.
    background: bool,
}

static INSTALLED: OnceLock<AccessLog> = OnceLock::new();

/// Makes [`write()`] write to `sink`, with the filter the global subscriber has (call after installing it).
pub fn install(sink: Sink, shape: Shape) {
    let requests = tracing::enabled!(target: "etagd::access", tracing::Level::INFO);
    let background = tracing::enabled!(target: "etagd::access", tracing::Level::DEBUG);
    let _ = INSTALLED.set(AccessLog { sink, shape, requests, background });
}

/// Whether [`install`] ran: the sidecar then writes the access log itself.
pub fn installed() -> bool {
    INSTALLED.get().is_some()
}

/// Writes the access line of `report`, if the log is installed and the filter lets it through.
pub fn write(report: &Report) {
    if let Some(log) = INSTALLED.get() {
        log.write(report);
    }
}

/// An observer that writes each report's access line after handing the report to `O` (the metrics).
pub struct Logged<O>(pub std::sync::Arc<O>);

impl<O: Observer> Observer for Logged<O> {
    fn report(&self, report: &Report) {
        self.0.report(report);
        write(report);
    }

    /// Only once [`install`] ran; otherwise (the sidecar started without its logging, as in some tests) the
    /// library's own `etagd::access` events stand.
    fn writes_access_log(&self) -> bool {
        installed()
    }
}

thread_local! {
    /// Per thread: the line being built and the timestamp prefix of the current second.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    line: String,
    second: u64,
    stamp: String,
}

impl AccessLog {
    /// A log writing `shape` lines to `sink`, for requests and (with `background`) background refreshes.
    pub fn new(sink: Sink, shape: Shape, background: bool) -> Self {
        Self { sink, shape, requests: true, background }
    }

    /// Writes the line of one report.
    pub fn write(&self, report: &Report) {
        let (level, message) = if report.background { ("DEBUG", "background refresh") } else { ("INFO", "request") };
        if !(if report.background { self.background } else { self.requests }) {
            return;
        }
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else { return };
            let scratch = &mut *scratch;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if scratch.second != now.as_secs() || scratch.stamp.is_empty() {
                scratch.second = now.as_secs();
                scratch.stamp = seconds_stamp(now.as_secs());
            }
            let line = &mut scratch.line;
            line.clear();
            match self.shape {
                Shape::Text => {
                    line.push_str(&scratch.stamp);
                    push_micros(line, now.subsec_micros());
                    line.push_str("Z ");
                    for _ in level.len()..5 {
                        line.push(' ');
                    }
                    line.push_str(level);
                    line.push(' ');
                    line.push_str(TARGET);
                    line.push_str(": ");
                    line.push_str(message);
                }
                Shape::Json => {
                    line.push_str("{\"timestamp\":\"");
                    line.push_str(&scratch.stamp);
                    push_micros(line, now.subsec_micros());
                    line.push_str("Z\",\"level\":\"");
                    line.push_str(level);
                    line.push_str("\",\"fields\":{\"message\":");
                    push_json_str(line, message);
                }
            }
            Fields { shape: self.shape, out: line }.report(report);
            if self.shape == Shape::Json {
                line.push_str("},\"target\":");
                push_json_str(line, TARGET);
                line.push('}');
            }
            line.push('\n');
            self.sink.append(line.as_bytes());
        });
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a UTC second (proleptic Gregorian), the part of `tracing-subscriber`'s timestamp
/// before the fraction, so access lines and other lines carry the same timestamps.
fn seconds_stamp(second: u64) -> String {
    let (days, rem) = (second / 86_400, second % 86_400);
    // Howard Hinnant's days-to-civil: days since 1970-01-01 to a year, month and day.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

fn push_micros(line: &mut String, micros: u32) {
    line.push('.');
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.push_str(std::str::from_utf8(&digits).expect("digits are ASCII"));
}

/// A report's fields in the shape's syntax, in the order the library's event named them.
struct Fields<'a> {
    shape: Shape,
    out: &'a mut String,
}

impl Fields<'_> {
    fn report(&mut self, report: &Report) {
        let detail = report.outcome.detail();
        // Display fields (`%` in the event): unquoted in text.
        self.display("method", report.method.as_str());
        self.str("host", report.host.as_deref().unwrap_or(""));
        self.display("path", &report.target);
        if !report.background {
            self.u64("status", u64::from(report.status));
        }
        self.str("outcome", report.label());
        self.str("detail", detail.as_deref().unwrap_or(""));
        if report.background {
            if let Some(status) = report.fwd_status {
                self.u64("origin_status", u64::from(status));
            }
        } else {
            self.millis("ms", report.elapsed);
        }
        if let Some(origin) = report.origin {
            self.millis("origin_ms", origin);
        }
    }

    fn key(&mut self, name: &str) {
        match self.shape {
            Shape::Text => {
                self.out.push(' ');
                self.out.push_str(name);
                self.out.push('=');
            }
            Shape::Json => {
                self.out.push(',');
                push_json_str(self.out, name);
                self.out.push(':');
            }
        }
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        match self.shape {
            Shape::Text => push_quoted(self.out, value),
            Shape::Json => push_json_str(self.out, value),
        }
    }

    /// Unquoted in text, as `tracing-subscriber` writes `%value`; a JSON string in JSON. Control characters
    /// cannot reach here: a method and a request target are tokens and visible characters by the time hyper
    /// parsed them.
    fn display(&mut self, name: &str, value: &str) {
        self.key(name);
        match self.shape {
            Shape::Text => self.out.push_str(value),
            Shape::Json => push_json_str(self.out, value),
        }
    }

    fn u64(&mut self, name: &str, value: u64) {
        self.key(name);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    /// Milliseconds to the microsecond: more digits are noise in a log.
    fn millis(&mut self, name: &str, value: Duration) {
        self.key(name);
        let micros = value.as_micros();
        self.out.push_str(itoa::Buffer::new().format(micros / 1000));
        self.out.push('.');
        let frac = micros % 1000;
        if frac < 100 {
            self.out.push('0');
        }
        if frac < 10 {
            self.out.push('0');
        }
        self.out.push_str(itoa::Buffer::new().format(frac));
    }
}

/// A text-format string value: quoted, with quotes, backslashes and control characters escaped, as Rust's
/// `Debug` for `str` writes the ones a request can carry.
fn push_quoted(out: &mut String, value: &str) {
    push_escaped(
        out,
        value,
        |c| c.is_control(),
        |out, c| {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        },
    );
}

/// A JSON string (RFC 8259 section 7).
fn push_json_str(out: &mut String, value: &str) {
    push_escaped(
        out,
        value,
        |c| (c as u32) < 0x20,
        |out, c| {
            let _ = write!(out, "\\u{:04x}", c as u32);
        },
    );
}

/// Quotes `value`, escaping quotes, backslashes and the common whitespace controls the same way in both
/// shapes; other characters `control` selects are written by `escape`.
fn push_escaped(out: &mut String, value: &str, control: fn(char) -> bool, escape: fn(&mut String, char)) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if control(c) => escape(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use etagd_client::exchange::{Filled, Outcome};

    #[test]
    fn seconds_stamps_are_utc_civil_dates() {
        assert_eq!(seconds_stamp(0), "1970-01-01T00:00:00");
        assert_eq!(seconds_stamp(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(seconds_stamp(1_796_135_948), "2026-12-01T14:39:08");
        assert_eq!(seconds_stamp(4_107_542_399), "2100-02-28T23:59:59");
    }

    fn report() -> Report {
        Report {
            outcome: Outcome::Hit,
            not_modified: true,
            status: 304,
            fwd_status: None,
            ttl: Some(60),
            method: http::Method::GET,
            host: Some("example.com".to_owned()),
            target: "/a?q=\"x\"".to_owned(),
            elapsed: Duration::from_micros(123_456),
            lookup: None,
            origin: None,
            origin_error: false,
            stored_bytes: 0,
            weakened: false,
            invalidations: Vec::new(),
            background: false,
        }
    }

    /// The lines `log` writes for `reports`.
    fn lines(shape: Shape, background: bool, reports: &[Report]) -> String {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let (sink, guard) = Sink::spawn(out.clone()).unwrap();
        let log = AccessLog::new(sink, shape, background);
        for report in reports {
            log.write(report);
        }
        drop(guard);
        String::from_utf8(out.0.lock().clone()).unwrap()
    }

    #[test]
    fn text_lines_have_the_formatters_shape() {
        let line = lines(Shape::Text, false, &[report()]);
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert_eq!(stamp.len(), "2026-12-01T14:39:12.478807Z".len(), "{stamp}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.');
        assert_eq!(
            rest,
            " INFO etagd::access: request method=GET host=\"example.com\" path=/a?q=\"x\" status=304 \
             outcome=\"not_modified\" detail=\"\" ms=123.456\n"
        );
        let filled = Report {
            outcome: Outcome::Miss(Filled::Stored),
            not_modified: false,
            status: 200,
            fwd_status: Some(200),
            origin: Some(Duration::from_micros(7_005)),
            ..report()
        };
        let line = lines(Shape::Text, false, &[filled]);
        assert!(line.ends_with(" status=200 outcome=\"miss\" detail=\"\" ms=123.456 origin_ms=7.005\n"), "{line}");
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let line = lines(Shape::Json, false, &[report()]);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).expect("one JSON object per line");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "etagd::access");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["method"], "GET");
        assert_eq!(fields["path"], "/a?q=\"x\"");
        assert_eq!(fields["status"], 304);
        assert_eq!(fields["ms"], 123.456);
        assert!(fields.get("origin_ms").is_none(), "an absent measure is left out, as the formatter does");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn background_refreshes_are_debug_lines_written_only_when_debug_is_on() {
        let refresh = Report {
            background: true,
            not_modified: false,
            fwd_status: Some(304),
            origin: Some(Duration::from_millis(2)),
            ..report()
        };
        assert_eq!(lines(Shape::Text, false, std::slice::from_ref(&refresh)), "", "not at the default level");
        let line = lines(Shape::Text, true, &[refresh]);
        assert!(
            line.ends_with(
                "DEBUG etagd::access: background refresh method=GET host=\"example.com\" path=/a?q=\"x\" \
                 outcome=\"hit\" detail=\"\" origin_status=304 origin_ms=2.000\n"
            ),
            "{line}"
        );
    }

    #[test]
    fn control_characters_cannot_break_a_line() {
        let hostile = Report { host: Some("a\nb\u{1}".to_owned()), ..report() };
        let text = lines(Shape::Text, false, std::slice::from_ref(&hostile));
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("host=\"a\\nb\\u{1}\""), "{text}");
        let json = lines(Shape::Json, false, &[hostile]);
        assert_eq!(json.lines().count(), 1);
        assert!(json.contains("\"host\":\"a\\nb\\u0001\""), "{json}");
    }
}
