//! Our own pipelined `mg` reader: a batch of reads written as one buffer on one connection, the answers parsed
//! in place, values handed out as slices of the read buffer.
//!
//! Written here rather than through `memcache::exp` because reads are the hot path: that client allocated about
//! thirty times per request on a 304 (each flag token, each answer line, a zero-filled copy of every value, a
//! timer per answer), a third of etagd's allocations per request (measured with uprobes on the allocator;
//! `BENCHMARKS.md`). Writes, deletes and touches, which a hit does not make, still go through that client.
//!
//! The reads are the three shapes the store needs (meta protocol, memcached 1.6):
//!
//! ```text
//! mg <key> v c N<secs>     leased: on a miss create a placeholder and win its lease (W), else Z while held
//! mg <key> v c t           plain: the value, its CAS and remaining TTL (to hand back a token it did not ask for)
//! mg <key> c t             presence: whether the item exists, no value
//! ```
//!
//! Answers are `VA <len> <flags>` with the value, `HD <flags>`, `EN` (miss), or an error line. The flags read
//! back are `c<cas>`, `t<ttl>` (-1: none), `W` (this reader won), `Z` (another holds the lease) and `X` (stale).

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection's read buffer: room for a batch of small answers.
const INITIAL_BUFFER: usize = 16 * 1024;
/// The largest read buffer kept on an idle connection; a larger one (after a bulk read) is replaced.
const KEEP_BUFFER: usize = 64 * 1024;

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

/// Appends one read's command line to `wire`. The key must have passed `check_key`.
pub(super) fn encode(wire: &mut Vec<u8>, key: &str, kind: ReadKind) {
    wire.extend_from_slice(b"mg ");
    wire.extend_from_slice(key.as_bytes());
    match kind {
        ReadKind::Leased(secs) => {
            wire.extend_from_slice(b" v c N");
            push_decimal(wire, u64::from(secs.max(1)));
        }
        ReadKind::Plain => wire.extend_from_slice(b" v c t"),
        ReadKind::Presence => wire.extend_from_slice(b" c t"),
    }
    wire.extend_from_slice(b"\r\n");
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

/// The key of an encoded command line (`mg <key> ...`).
pub(super) fn key_of(line: &[u8]) -> &[u8] {
    line.get(3..).unwrap_or_default().split(|&b| b == b' ' || b == b'\r').next().unwrap_or_default()
}

/// One caller's reads, encoded: the command lines back to back, and where each ends.
#[derive(Debug, Default)]
pub(super) struct Reads {
    wire: Vec<u8>,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    end: u32,
    kind: ReadKind,
}

impl Reads {
    pub(super) fn with_capacity(reads: usize) -> Self {
        Self { wire: Vec::with_capacity(reads * 48), lines: Vec::with_capacity(reads) }
    }

    /// Adds a read of `key` (which must have passed `check_key`).
    pub(super) fn push(&mut self, key: &str, kind: ReadKind) {
        encode(&mut self.wire, key, kind);
        self.lines.push(Line { end: u32::try_from(self.wire.len()).unwrap_or(u32::MAX), kind });
    }

    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Every command line, in order, as one buffer to write.
    pub(super) fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Read `index`'s command line and what kind of read it is.
    pub(super) fn line(&self, index: usize) -> (&[u8], ReadKind) {
        let start = index.checked_sub(1).map_or(0, |before| self.lines[before].end as usize);
        let line = self.lines[index];
        (&self.wire[start..line.end as usize], line.kind)
    }
}

/// One read's answer, as memcached gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Answer {
    /// The item exists (`VA` or `HD`); false for `EN`.
    pub(super) found: bool,
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

/// Why a read has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReadFailure {
    /// The exchange did not finish in time.
    Timeout,
    /// The connection failed or the answers made no sense: the server is failing (it is marked down).
    Transport(String),
    /// The server answered this read with an error (`SERVER_ERROR`, `CLIENT_ERROR`): about this read only.
    Refused(String),
}

/// One read's result.
pub(super) type ReadResult = Result<Answer, ReadFailure>;

/// A pool of connections for reads to one server.
pub(super) struct ReadPool {
    addr: String,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(addr: String, connect_timeout: Duration, max_idle: usize) -> Self {
        Self { addr, connect_timeout, max_idle, idle: Mutex::new(Vec::new()) }
    }

    /// Sends `count` encoded reads and returns one result per read, in order. The caller bounds the time.
    pub(super) async fn read(&self, wire: &[u8], count: usize) -> Vec<ReadResult> {
        let mut answers = Vec::with_capacity(count);
        let pooled = self.idle.lock().pop();
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => match self.connect().await {
                Ok(connection) => connection,
                Err(failure) => return fail_rest(answers, count, failure),
            },
        };
        let mut outcome = connection.exchange(wire, count, &mut answers).await;
        if reused && answers.is_empty() && matches!(outcome, Err(Exchanged::Nothing(_))) {
            // An idle connection the server closed meanwhile (a restart, an idle timeout): one fresh try, as
            // nothing of this batch was answered.
            connection = match self.connect().await {
                Ok(connection) => connection,
                Err(failure) => return fail_rest(answers, count, failure),
            };
            outcome = connection.exchange(wire, count, &mut answers).await;
        }
        match outcome {
            Ok(()) => {
                if connection.buffer.capacity() > KEEP_BUFFER {
                    // Grown by a bulk read: keep the connection, not the megabyte.
                    connection.buffer = BytesMut::with_capacity(INITIAL_BUFFER);
                }
                if connection.reusable {
                    let mut idle = self.idle.lock();
                    if idle.len() < self.max_idle {
                        idle.push(connection);
                    }
                }
                answers
            }
            Err(Exchanged::Nothing(failure) | Exchanged::Partly(failure)) => fail_rest(answers, count, failure),
        }
    }

    async fn connect(&self) -> Result<Connection, ReadFailure> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ReadFailure::Transport(format!("cannot connect: {error}"))),
            Err(_elapsed) => return Err(ReadFailure::Timeout),
        };
        stream.set_nodelay(true).map_err(|error| ReadFailure::Transport(error.to_string()))?;
        Ok(Connection { stream, buffer: BytesMut::with_capacity(INITIAL_BUFFER), reusable: true })
    }
}

fn fail_rest(mut answers: Vec<ReadResult>, count: usize, failure: ReadFailure) -> Vec<ReadResult> {
    answers.resize(count, Err(failure));
    answers
}

/// How an exchange failed: before any byte of an answer arrived, or after.
enum Exchanged {
    Nothing(ReadFailure),
    Partly(ReadFailure),
}

struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    /// False once the server answered a malformed command: what follows on this connection is not trusted.
    reusable: bool,
}

impl Connection {
    async fn exchange(&mut self, wire: &[u8], count: usize, answers: &mut Vec<ReadResult>) -> Result<(), Exchanged> {
        let transport = |error: io::Error| ReadFailure::Transport(error.to_string());
        self.stream.write_all(wire).await.map_err(|error| Exchanged::Nothing(transport(error)))?;
        let mut received = false;
        while answers.len() < count {
            match parse(&mut self.buffer) {
                Ok(Some(parsed)) => {
                    if matches!(parsed, Err(ReadFailure::Refused(_))) {
                        self.reusable = false;
                    }
                    answers.push(parsed);
                    continue;
                }
                Ok(None) => {}
                Err(detail) => return Err(Exchanged::Partly(ReadFailure::Transport(detail))),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => {
                    let failure = ReadFailure::Transport("memcached closed the connection".to_owned());
                    return Err(if received { Exchanged::Partly(failure) } else { Exchanged::Nothing(failure) });
                }
                Ok(_) => received = true,
                Err(error) if received => return Err(Exchanged::Partly(transport(error))),
                Err(error) => return Err(Exchanged::Nothing(transport(error))),
            }
        }
        if !self.buffer.is_empty() {
            // More than was asked for: the connection is out of step.
            self.reusable = false;
        }
        Ok(())
    }
}

/// Takes one complete answer off the front of `buffer`: `Ok(None)` when more bytes are needed, `Err` when the
/// bytes are not a meta-protocol answer.
fn parse(buffer: &mut BytesMut) -> Result<Option<ReadResult>, String> {
    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
        if buffer.len() > 8 * 1024 {
            return Err("memcached sent an answer line longer than 8 KiB".to_owned());
        }
        return Ok(None);
    };
    let line = &buffer[..end];
    let mut tokens = line.split(|&b| b == b' ');
    let code = tokens.next().unwrap_or_default();
    let (mut answer, value_len) = match code {
        b"EN" => {
            buffer.advance(end + 2);
            return Ok(Some(Ok(Answer::default())));
        }
        b"HD" => (Answer { found: true, ..Answer::default() }, None),
        b"VA" => {
            let len = tokens.next().and_then(decimal).ok_or_else(|| malformed(line))?;
            let len = usize::try_from(len).map_err(|_| malformed(line))?;
            (Answer { found: true, ..Answer::default() }, Some(len))
        }
        b"SERVER_ERROR" | b"CLIENT_ERROR" | b"ERROR" => {
            let message = String::from_utf8_lossy(line).into_owned();
            buffer.advance(end + 2);
            return Ok(Some(Err(ReadFailure::Refused(message))));
        }
        _ => return Err(malformed(line)),
    };
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
        answer.value = Some(if len < KEEP_BUFFER {
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

    fn parse_all(bytes: &[u8]) -> (Vec<ReadResult>, BytesMut) {
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(answer) = parse(&mut buffer).expect("well-formed") {
            out.push(answer);
        }
        (out, buffer)
    }

    #[test]
    fn reads_encode_as_the_three_mg_shapes() {
        let mut wire = Vec::new();
        encode(&mut wire, "etagd2:ns:u:1", ReadKind::Leased(5));
        encode(&mut wire, "etagd2:ns:g:all", ReadKind::Plain);
        encode(&mut wire, "c:1", ReadKind::Presence);
        encode(&mut wire, "k", ReadKind::Leased(0));
        assert_eq!(wire, b"mg etagd2:ns:u:1 v c N5\r\nmg etagd2:ns:g:all v c t\r\nmg c:1 c t\r\nmg k v c N1\r\n");
        assert_eq!(key_of(b"mg etagd2:ns:u:1 v c N5\r\n"), b"etagd2:ns:u:1");
    }

    #[test]
    fn answers_parse_with_their_flags_and_values() {
        let (answers, rest) =
            parse_all(b"VA 3 c7 t-1\r\nabc\r\nEN\r\nHD c9 W\r\nVA 0 c4 W\r\n\r\nVA 2 c5 X Z t30\r\nhi\r\nSERVER_ERROR out of memory\r\nVA 5 c1\r\nab");
        let answers: Vec<_> = answers.into_iter().collect();
        assert_eq!(answers.len(), 6);
        assert_eq!(
            answers[0],
            Ok(Answer {
                found: true,
                value: Some(Bytes::from_static(b"abc")),
                cas: 7,
                ttl: Some(-1),
                ..Answer::default()
            })
        );
        assert_eq!(answers[1], Ok(Answer::default()), "EN is a miss");
        assert_eq!(answers[2], Ok(Answer { found: true, cas: 9, won: true, ..Answer::default() }));
        assert_eq!(
            answers[3],
            Ok(Answer { found: true, value: Some(Bytes::new()), cas: 4, won: true, ..Answer::default() }),
            "a placeholder this read created"
        );
        assert_eq!(
            answers[4],
            Ok(Answer {
                found: true,
                value: Some(Bytes::from_static(b"hi")),
                cas: 5,
                ttl: Some(30),
                busy: true,
                stale: true,
                ..Answer::default()
            })
        );
        assert_eq!(answers[5], Err(ReadFailure::Refused("SERVER_ERROR out of memory".to_owned())));
        assert_eq!(&rest[..], b"VA 5 c1\r\nab", "an incomplete value waits for more bytes");
    }

    #[test]
    fn garbage_is_a_transport_failure_not_an_answer() {
        for bytes in [&b"HELLO\r\n"[..], b"VA x\r\n", b"VA 2\r\nabcd\r\n", b"HD cxyz\r\n"] {
            assert!(parse(&mut BytesMut::from(bytes)).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert!(parse(&mut BytesMut::from(&[b'x'; 9000][..])).is_err(), "an endless line");
        assert_eq!(parse(&mut BytesMut::from(&b"VA 3 c1"[..])), Ok(None), "an unfinished line waits");
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced_once() {
        use tokio::io::AsyncBufReadExt;
        // A server that answers one read per connection, then hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                let mut stream = tokio::io::BufReader::new(stream);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                assert_eq!(line, "mg k v c t\r\n");
                stream.get_mut().write_all(b"EN\r\n").await.unwrap();
            }
        });
        let pool = ReadPool::new(addr, Duration::from_secs(1), 4);
        let mut wire = Vec::new();
        encode(&mut wire, "k", ReadKind::Plain);
        assert_eq!(pool.read(&wire, 1).await, [Ok(Answer::default())]);
        // The pooled connection is closed by now (or will be when written to); the read goes out on a new one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.read(&wire, 1).await, [Ok(Answer::default())]);
        server.await.unwrap();
    }
}
