//! The meta protocol (memcached 1.6) on the wire: a batch of commands encoded back to back into one buffer,
//! and the answers parsed in place, values handed out as slices of the read buffer.
//!
//! Written here rather than taken from `memcache::exp` because every request and every fill goes through it:
//! that client allocated about thirty times per 304 on reads (a `Vec` per flag token and per answer line, a
//! zero-filled copy of each value, a timer per answer), and on a miss its writes cost some 110 us of CPU for
//! five sets and a release, each a round trip of its own (`BENCHMARKS.md`). Here a fill's writes join the
//! reads of concurrent requests in one pipelined write (`coalescer`).
//!
//! The commands are the shapes the store needs:
//!
//! ```text
//! mg <key> v c N<secs>           leased read: on a miss create a placeholder and win its lease (W), else Z
//! mg <key> v c t                 plain read: the value, its CAS and remaining TTL
//! mg <key> c t                   presence: whether the item exists, no value
//! mg <key> c T<ttl>              touch: a new expiry, the CAS back
//! ms <key> <len> T<ttl> [C<cas>|ME]  set, compare-and-set, add
//! md <key> [C<cas>] [I] [T<ttl>] delete, or with I mark stale and hand one reader a refresh token
//! ```
//!
//! Answers are `VA <len> <flags>` with the value, `HD <flags>`, `EN` (miss), `NS` (not stored), `EX` (CAS
//! mismatch), `NF` (not found) or an error line. The flags read back are `c<cas>`, `t<ttl>` (-1: none), `W`
//! (this reader won), `Z` (another holds the lease) and `X` (stale).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};

use crate::store::{Expiry, SetCondition};

/// A value at least this large is handed out as a slice of the read buffer rather than copied.
pub(super) const SHARE_VALUES_FROM: usize = 64 * 1024;
/// memcached reads a TTL above this many seconds as an absolute unix time.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 60 * 60;

/// Which of the three reads to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadKind {
    /// A leased read with this placeholder lifetime in seconds.
    Leased(u32),
    /// A plain read of the value.
    Plain,
    /// A read of whether the item exists.
    Presence,
}

/// What a command in a batch is, as far as the coalescer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A read of one of the three kinds.
    Read(ReadKind),
    /// A set, delete or touch: never merged with another.
    Write,
}

/// How a delete is sent (`md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DeleteFlags {
    /// `C<cas>`: only if the item's CAS is this one.
    pub(super) cas: Option<u64>,
    /// `I`: keep the value, mark it stale and hand one reader a refresh token.
    pub(super) invalidate: bool,
    /// `T<secs>`: with `I`, the stale item's remaining lifetime.
    pub(super) stale_secs: Option<u32>,
}

/// The TTL token for an expiry: 0 for none, seconds up to 30 days, an absolute unix time beyond (which is
/// how the protocol reads longer ones).
pub(super) fn wire_ttl(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => 0,
        Expiry::Secs(secs) => relative_ttl(u64::from(secs.max(1))),
    }
}

/// A relative lifetime in seconds (at least 1) as the TTL token.
pub(super) fn relative_ttl(secs: u64) -> u64 {
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    now + secs
}

/// A batch of commands, encoded: the command lines (and set values) back to back, and where each ends.
#[derive(Debug, Default)]
pub(super) struct Commands {
    wire: Vec<u8>,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    end: u32,
    kind: Kind,
}

impl Commands {
    pub(super) fn with_capacity(commands: usize) -> Self {
        Self { wire: Vec::with_capacity(commands * 48), lines: Vec::with_capacity(commands) }
    }

    /// Adds a read of `key` (which must have passed `check_key`).
    pub(super) fn read(&mut self, key: &str, kind: ReadKind) {
        self.key_line(b"mg ", key);
        match kind {
            ReadKind::Leased(secs) => {
                self.wire.extend_from_slice(b" v c N");
                push_decimal(&mut self.wire, u64::from(secs.max(1)));
            }
            ReadKind::Plain => self.wire.extend_from_slice(b" v c t"),
            ReadKind::Presence => self.wire.extend_from_slice(b" c t"),
        }
        self.end_line(Kind::Read(kind));
    }

    /// Adds a touch: a new expiry for the item, its CAS back.
    pub(super) fn touch(&mut self, key: &str, expiry: Expiry) {
        self.key_line(b"mg ", key);
        self.wire.extend_from_slice(b" c T");
        push_decimal(&mut self.wire, wire_ttl(expiry));
        self.end_line(Kind::Write);
    }

    /// Adds a set of `value` (not empty: zero-byte items are lease placeholders).
    pub(super) fn set(&mut self, key: &str, value: &[u8], expiry: Expiry, condition: SetCondition) {
        self.key_line(b"ms ", key);
        self.wire.push(b' ');
        push_decimal(&mut self.wire, value.len() as u64);
        self.wire.extend_from_slice(b" T");
        push_decimal(&mut self.wire, wire_ttl(expiry));
        match condition {
            SetCondition::Always => {}
            SetCondition::Add => self.wire.extend_from_slice(b" ME"),
            SetCondition::Cas(cas) => {
                self.wire.extend_from_slice(b" C");
                push_decimal(&mut self.wire, cas);
            }
        }
        self.wire.extend_from_slice(b"\r\n");
        self.wire.extend_from_slice(value);
        self.end_line(Kind::Write);
    }

    /// Adds a delete.
    pub(super) fn delete(&mut self, key: &str, flags: DeleteFlags) {
        self.key_line(b"md ", key);
        if let Some(cas) = flags.cas {
            self.wire.extend_from_slice(b" C");
            push_decimal(&mut self.wire, cas);
        }
        if flags.invalidate {
            self.wire.extend_from_slice(b" I");
            if let Some(secs) = flags.stale_secs {
                self.wire.extend_from_slice(b" T");
                push_decimal(&mut self.wire, relative_ttl(u64::from(secs.max(1))));
            }
        }
        self.end_line(Kind::Write);
    }

    fn key_line(&mut self, verb: &[u8], key: &str) {
        self.wire.extend_from_slice(verb);
        self.wire.extend_from_slice(key.as_bytes());
    }

    fn end_line(&mut self, kind: Kind) {
        self.wire.extend_from_slice(b"\r\n");
        self.lines.push(Line { end: u32::try_from(self.wire.len()).unwrap_or(u32::MAX), kind });
    }

    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Every command, in order, as one buffer to write.
    pub(super) fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Command `index` as sent (its line, and a set's value) and what kind it is.
    pub(super) fn line(&self, index: usize) -> (&[u8], Kind) {
        let start = index.checked_sub(1).map_or(0, |before| self.lines[before].end as usize);
        let line = self.lines[index];
        (&self.wire[start..line.end as usize], line.kind)
    }
}

fn push_decimal(wire: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    wire.extend_from_slice(&digits[at..]);
}

/// The key of an encoded command (`mg <key> ...`, `ms`, `md`).
pub(super) fn key_of(line: &[u8]) -> &[u8] {
    line.get(3..).unwrap_or_default().split(|&b| b == b' ' || b == b'\r').next().unwrap_or_default()
}

/// An answer's status code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Code {
    /// `VA`: a value follows.
    Value,
    /// `HD`: found (a read), stored (a set), deleted (a delete), touched.
    Done,
    /// `EN`: a read's miss.
    #[default]
    Miss,
    /// `NS`: a set not stored (an add of an existing item).
    NotStored,
    /// `EX`: the CAS did not match.
    Exists,
    /// `NF`: a compare-and-set or delete of an item that does not exist.
    NotFound,
}

/// One command's answer, as memcached gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) code: Code,
    /// The value, for a `VA` answer.
    pub(super) value: Option<Bytes>,
    /// The item's CAS (0 when not sent).
    pub(super) cas: u64,
    /// Remaining TTL in seconds, -1 for none, when asked for.
    pub(super) ttl: Option<i64>,
    /// `W`: this reader holds the item's lease (a placeholder it created, or a stale item's refresh token).
    pub(super) won: bool,
    /// `Z`: another reader holds it.
    pub(super) busy: bool,
    /// `X`: the item is marked stale.
    pub(super) stale: bool,
}

impl Answer {
    /// The item exists (a read's `VA` or `HD`), or the write applied.
    pub(super) fn applied(&self) -> bool {
        matches!(self.code, Code::Value | Code::Done)
    }
}

/// Why a command has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The exchange did not finish in time.
    Timeout,
    /// The connection failed or the answers made no sense: the server is failing (it is marked down).
    Transport(String),
    /// The server answered this command with an error (`SERVER_ERROR`, `CLIENT_ERROR`): about it only.
    Refused(String),
}

impl Failure {
    /// A failure of the connection or the server rather than an answer about one command: it marks the
    /// server down.
    pub(super) fn is_transport(&self) -> bool {
        matches!(self, Failure::Timeout | Failure::Transport(_))
    }

    /// memcached refused a value larger than its item limit (`SERVER_ERROR object too large for cache`).
    pub(super) fn too_large(&self) -> bool {
        matches!(self, Failure::Refused(message) if message.contains("too large"))
    }
}

/// One command's result.
pub(super) type Outcome = Result<Answer, Failure>;

/// Takes one complete answer off the front of `buffer`: `Ok(None)` when more bytes are needed, `Err` when the
/// bytes are not a meta-protocol answer.
pub(super) fn parse(buffer: &mut BytesMut) -> Result<Option<Outcome>, String> {
    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
        if buffer.len() > 8 * 1024 {
            return Err("memcached sent an answer line longer than 8 KiB".to_owned());
        }
        return Ok(None);
    };
    let line = &buffer[..end];
    let mut tokens = line.split(|&b| b == b' ');
    let code = tokens.next().unwrap_or_default();
    let (code, value_len) = match code {
        b"VA" => {
            let len = tokens.next().and_then(decimal).ok_or_else(|| malformed(line))?;
            (Code::Value, Some(usize::try_from(len).map_err(|_| malformed(line))?))
        }
        b"HD" => (Code::Done, None),
        b"EN" => (Code::Miss, None),
        b"NS" => (Code::NotStored, None),
        b"EX" => (Code::Exists, None),
        b"NF" => (Code::NotFound, None),
        b"SERVER_ERROR" | b"CLIENT_ERROR" | b"ERROR" => {
            let message = String::from_utf8_lossy(line).into_owned();
            buffer.advance(end + 2);
            return Ok(Some(Err(Failure::Refused(message))));
        }
        _ => return Err(malformed(line)),
    };
    let mut answer = Answer { code, ..Answer::default() };
    for token in tokens {
        match token.split_first() {
            Some((b'c', digits)) => answer.cas = decimal(digits).ok_or_else(|| malformed(line))?,
            Some((b't', digits)) => answer.ttl = Some(signed(digits).ok_or_else(|| malformed(line))?),
            Some((b'W', _)) => answer.won = true,
            Some((b'Z', _)) => answer.busy = true,
            Some((b'X', _)) => answer.stale = true,
            _ => {}
        }
    }
    let header = end + 2;
    if let Some(len) = value_len {
        if buffer.len() < header + len + 2 {
            buffer.reserve(header + len + 2 - buffer.len());
            return Ok(None);
        }
        if &buffer[header + len..header + len + 2] != b"\r\n" {
            return Err("memcached sent a value without its CRLF terminator".to_owned());
        }
        buffer.advance(header);
        // A small value is copied out, so that keeping it (the decode memo, the body cache) does not keep the
        // whole read buffer alive; a large one takes its bytes from the buffer as they are.
        answer.value = Some(if len < SHARE_VALUES_FROM {
            let value = Bytes::copy_from_slice(&buffer[..len]);
            buffer.advance(len);
            value
        } else {
            buffer.split_to(len).freeze()
        });
        buffer.advance(2);
    } else {
        buffer.advance(header);
    }
    Ok(Some(Ok(answer)))
}

fn malformed(line: &[u8]) -> String {
    format!("memcached sent a malformed answer line {:?}", String::from_utf8_lossy(line))
}

fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        digit.is_ascii_digit().then_some(())?;
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn signed(digits: &[u8]) -> Option<i64> {
    match digits.split_first() {
        Some((b'-', rest)) => decimal(rest).and_then(|value| i64::try_from(value).ok()).map(|value| -value),
        _ => decimal(digits).and_then(|value| i64::try_from(value).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> (Vec<Outcome>, BytesMut) {
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(answer) = parse(&mut buffer).expect("well-formed") {
            out.push(answer);
        }
        (out, buffer)
    }

    fn text(commands: &Commands) -> String {
        String::from_utf8(commands.wire().to_vec()).unwrap()
    }

    #[test]
    fn reads_encode_as_the_three_mg_shapes() {
        let mut commands = Commands::default();
        commands.read("etagd2:ns:u:1", ReadKind::Leased(5));
        commands.read("etagd2:ns:g:all", ReadKind::Plain);
        commands.read("c:1", ReadKind::Presence);
        commands.read("k", ReadKind::Leased(0));
        assert_eq!(
            text(&commands),
            "mg etagd2:ns:u:1 v c N5\r\nmg etagd2:ns:g:all v c t\r\nmg c:1 c t\r\nmg k v c N1\r\n"
        );
        assert_eq!(commands.line(1), (&b"mg etagd2:ns:g:all v c t\r\n"[..], Kind::Read(ReadKind::Plain)));
        assert_eq!(key_of(commands.line(0).0), b"etagd2:ns:u:1");
    }

    #[test]
    fn writes_encode_with_their_conditions_and_lifetimes() {
        let mut commands = Commands::default();
        commands.set("a", b"xyz", Expiry::Secs(60), SetCondition::Always);
        commands.set("b", b"v", Expiry::Never, SetCondition::Add);
        commands.set("c", b"v", Expiry::Secs(0), SetCondition::Cas(42));
        commands.touch("d", Expiry::Secs(9));
        commands.delete("e", DeleteFlags::default());
        commands.delete("f", DeleteFlags { cas: Some(7), ..DeleteFlags::default() });
        commands.delete("g", DeleteFlags { cas: Some(8), invalidate: true, stale_secs: Some(30) });
        commands.delete("h", DeleteFlags { invalidate: true, ..DeleteFlags::default() });
        assert_eq!(
            text(&commands),
            "ms a 3 T60\r\nxyz\r\nms b 1 T0 ME\r\nv\r\nms c 1 T1 C42\r\nv\r\nmg d c T9\r\nmd e\r\nmd f C7\r\n\
             md g C8 I T30\r\nmd h I\r\n"
        );
        assert_eq!(commands.line(0), (&b"ms a 3 T60\r\nxyz\r\n"[..], Kind::Write), "a set's value is part of it");
        assert_eq!(key_of(commands.line(6).0), b"g");
        assert_eq!(commands.len(), 8);
    }

    /// Past 30 days memcached reads the token as a unix time, so a long lifetime is sent as one.
    #[test]
    fn lifetimes_past_thirty_days_are_sent_as_absolute_times() {
        assert_eq!(wire_ttl(Expiry::Secs(MAX_RELATIVE_TTL as u32)), MAX_RELATIVE_TTL);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let absolute = wire_ttl(Expiry::Secs(MAX_RELATIVE_TTL as u32 + 1));
        assert!((now + MAX_RELATIVE_TTL..=now + MAX_RELATIVE_TTL + 5).contains(&absolute), "{absolute}");
    }

    #[test]
    fn answers_parse_with_their_flags_and_values() {
        let (answers, rest) = parse_all(
            b"VA 3 c7 t-1\r\nabc\r\nEN\r\nHD c9 W\r\nVA 0 c4 W\r\n\r\nVA 2 c5 X Z t30\r\nhi\r\n\
              SERVER_ERROR out of memory\r\nNS\r\nEX\r\nNF\r\nVA 5 c1\r\nab",
        );
        assert_eq!(answers.len(), 9);
        let value = |bytes: &'static [u8]| Some(Bytes::from_static(bytes));
        assert_eq!(
            answers[0],
            Ok(Answer { code: Code::Value, value: value(b"abc"), cas: 7, ttl: Some(-1), ..Answer::default() })
        );
        assert_eq!(answers[1], Ok(Answer::default()), "EN is a miss");
        assert!(!Answer::default().applied());
        assert_eq!(answers[2], Ok(Answer { code: Code::Done, cas: 9, won: true, ..Answer::default() }));
        assert_eq!(
            answers[3],
            Ok(Answer { code: Code::Value, value: Some(Bytes::new()), cas: 4, won: true, ..Answer::default() }),
            "a placeholder this read created"
        );
        assert_eq!(
            answers[4],
            Ok(Answer {
                code: Code::Value,
                value: value(b"hi"),
                cas: 5,
                ttl: Some(30),
                busy: true,
                stale: true,
                ..Answer::default()
            })
        );
        assert_eq!(answers[5], Err(Failure::Refused("SERVER_ERROR out of memory".to_owned())));
        let codes: Vec<Code> = answers[6..].iter().map(|answer| answer.as_ref().unwrap().code).collect();
        assert_eq!(codes, [Code::NotStored, Code::Exists, Code::NotFound]);
        assert_eq!(&rest[..], b"VA 5 c1\r\nab", "an incomplete value waits for more bytes");
    }

    #[test]
    fn a_refused_oversized_value_is_recognised() {
        assert!(Failure::Refused("SERVER_ERROR object too large for cache".to_owned()).too_large());
        assert!(!Failure::Refused("SERVER_ERROR out of memory".to_owned()).too_large());
        assert!(!Failure::Timeout.too_large());
    }

    #[test]
    fn garbage_is_a_transport_failure_not_an_answer() {
        for bytes in [&b"HELLO\r\n"[..], b"VA x\r\n", b"VA 2\r\nabcd\r\n", b"HD cxyz\r\n"] {
            assert!(parse(&mut BytesMut::from(bytes)).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert!(parse(&mut BytesMut::from(&[b'x'; 9000][..])).is_err(), "an endless line");
        assert_eq!(parse(&mut BytesMut::from(&b"VA 3 c1"[..])), Ok(None), "an unfinished line waits");
    }
}
