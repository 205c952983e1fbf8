//! The access log's own formatter: the library writes one `etagd::access` event per request, and this layer
//! turns it into the same line `tracing-subscriber`'s formatter would (text or JSON, same fields, same order),
//! with less work per line: the timestamp's seconds formatted once a second, numbers without `core::fmt`, the
//! line built in a reused buffer and appended to the [`Sink`] whole. Every other event goes through the
//! ordinary formatter.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::sink::Sink;

/// The target of the library's access log events.
pub const TARGET: &str = "etagd::access";

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `<time> <LEVEL> etagd::access: request key=value ...`, as `tracing-subscriber`'s full format.
    Text,
    /// `{"timestamp":..,"level":..,"fields":{"message":..,..},"target":"etagd::access"}`, as its JSON format.
    Json,
}

/// Formats `etagd::access` events into the sink.
pub struct AccessLayer {
    sink: Sink,
    shape: Shape,
}

impl AccessLayer {
    /// A layer writing `shape` lines to `sink`.
    pub fn new(sink: Sink, shape: Shape) -> Self {
        Self { sink, shape }
    }
}

thread_local! {
    /// Per thread: the line being built, its fields, and the timestamp prefix of the current second.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    line: String,
    fields: String,
    message: String,
    second: u64,
    stamp: String,
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else { return };
            let scratch = &mut *scratch;
            scratch.fields.clear();
            scratch.message.clear();
            event.record(&mut Fields { shape: self.shape, out: &mut scratch.fields, message: &mut scratch.message });
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if scratch.second != now.as_secs() || scratch.stamp.is_empty() {
                scratch.second = now.as_secs();
                scratch.stamp = seconds_stamp(now.as_secs());
            }
            let level = event.metadata().level().as_str();
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
                    line.push_str(event.metadata().target());
                    line.push_str(": ");
                    line.push_str(&scratch.message);
                    line.push_str(&scratch.fields);
                }
                Shape::Json => {
                    line.push_str("{\"timestamp\":\"");
                    line.push_str(&scratch.stamp);
                    push_micros(line, now.subsec_micros());
                    line.push_str("Z\",\"level\":\"");
                    line.push_str(level);
                    line.push_str("\",\"fields\":{\"message\":");
                    push_json_str(line, &scratch.message);
                    line.push_str(&scratch.fields);
                    line.push_str("},\"target\":");
                    push_json_str(line, event.metadata().target());
                    line.push('}');
                }
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

/// Records an event's fields in the shape's syntax; the message separately, since it leads the line.
struct Fields<'a> {
    shape: Shape,
    out: &'a mut String,
    message: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        match self.shape {
            Shape::Text => {
                self.out.push(' ');
                self.out.push_str(field.name());
                self.out.push('=');
            }
            Shape::Json => {
                self.out.push(',');
                push_json_str(self.out, field.name());
                self.out.push(':');
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
            return;
        }
        self.key(field);
        match self.shape {
            Shape::Text => push_quoted(self.out, value),
            Shape::Json => push_json_str(self.out, value),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// Milliseconds and other measures, to the microsecond: more digits are noise in a log.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if !value.is_finite() {
            self.out.push_str(if matches!(self.shape, Shape::Json) { "null" } else { "NaN" });
            return;
        }
        let thousandths = (value.abs() * 1000.0).round() as u64;
        if value < 0.0 && thousandths > 0 {
            self.out.push('-');
        }
        self.out.push_str(itoa::Buffer::new().format(thousandths / 1000));
        self.out.push('.');
        let frac = thousandths % 1000;
        if frac < 100 {
            self.out.push('0');
        }
        if frac < 10 {
            self.out.push('0');
        }
        self.out.push_str(itoa::Buffer::new().format(frac));
    }

    /// `%value` (Display) and `?value` (Debug) fields: unquoted in text, as `tracing-subscriber` writes them;
    /// a JSON string in JSON.
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        self.key(field);
        match self.shape {
            Shape::Text => {
                let _ = write!(self.out, "{value:?}");
            }
            Shape::Json => {
                let mut text = String::new();
                let _ = write!(text, "{value:?}");
                push_json_str(self.out, &text);
            }
        }
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
    use tracing_subscriber::prelude::*;

    #[test]
    fn seconds_stamps_are_utc_civil_dates() {
        assert_eq!(seconds_stamp(0), "1970-01-01T00:00:00");
        assert_eq!(seconds_stamp(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(seconds_stamp(1_796_135_948), "2026-12-01T14:39:08");
        assert_eq!(seconds_stamp(4_107_542_399), "2100-02-28T23:59:59");
    }

    /// Formats one access event the way the library writes it, through a real subscriber.
    fn line(shape: Shape, emit: impl FnOnce()) -> String {
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
        let subscriber = tracing_subscriber::registry().with(AccessLayer::new(sink, shape));
        tracing::subscriber::with_default(subscriber, emit);
        drop(guard);
        String::from_utf8(out.0.lock().clone()).unwrap()
    }

    fn emit() {
        tracing::info!(
            target: "etagd::access",
            method = %http::Method::GET,
            host = "example.com",
            path = %"/a?q=\"x\"",
            status = 304u16,
            outcome = "hit",
            detail = "",
            ms = 0.123_456_f64,
            origin_ms = None::<f64>,
            "request"
        );
    }

    #[test]
    fn text_lines_have_the_formatters_shape() {
        let line = line(Shape::Text, emit);
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert_eq!(stamp.len(), "2026-12-01T14:39:12.478807Z".len(), "{stamp}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.');
        assert_eq!(
            rest,
            " INFO etagd::access: request method=GET host=\"example.com\" path=/a?q=\"x\" status=304 outcome=\"hit\" \
             detail=\"\" ms=0.123\n"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let line = line(Shape::Json, emit);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).expect("one JSON object per line");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "etagd::access");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["method"], "GET");
        assert_eq!(fields["path"], "/a?q=\"x\"");
        assert_eq!(fields["status"], 304);
        assert_eq!(fields["ms"], 0.123);
        assert!(fields.get("origin_ms").is_none(), "an absent measure is left out, as the formatter does");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn control_characters_cannot_break_a_line() {
        let text = line(Shape::Text, || tracing::info!(target: "etagd::access", host = "a\nb\u{1}", "request"));
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("host=\"a\\nb\\u{1}\""), "{text}");
        let json = line(Shape::Json, || tracing::info!(target: "etagd::access", host = "a\nb\u{1}", "request"));
        assert_eq!(json.lines().count(), 1);
        assert!(json.contains("\"host\":\"a\\nb\\u0001\""), "{json}");
    }
}
