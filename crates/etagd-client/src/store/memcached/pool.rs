//! Pooled connections to one server: a batch of encoded commands written as one buffer, one answer read back
//! per command, in order.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::protocol::{Failure, Outcome, parse};

/// A connection's read buffer: room for a batch of small answers.
const INITIAL_BUFFER: usize = 16 * 1024;
/// The largest read buffer kept on an idle connection; a larger one (after a bulk read) is replaced.
const KEEP_BUFFER: usize = 64 * 1024;

/// A pool of connections to one server.
pub(super) struct Pool {
    addr: String,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn new(addr: String, connect_timeout: Duration, max_idle: usize) -> Self {
        Self { addr, connect_timeout, max_idle, idle: Mutex::new(Vec::new()) }
    }

    /// Sends `count` encoded commands and returns one result per command, in order. The caller bounds the time.
    pub(super) async fn exchange(&self, wire: &[u8], count: usize) -> Vec<Outcome> {
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

    async fn connect(&self) -> Result<Connection, Failure> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(Failure::Transport(format!("cannot connect: {error}"))),
            Err(_elapsed) => return Err(Failure::Timeout),
        };
        stream.set_nodelay(true).map_err(|error| Failure::Transport(error.to_string()))?;
        Ok(Connection { stream, buffer: BytesMut::with_capacity(INITIAL_BUFFER), reusable: true })
    }
}

fn fail_rest(mut answers: Vec<Outcome>, count: usize, failure: Failure) -> Vec<Outcome> {
    answers.resize(count, Err(failure));
    answers
}

/// How an exchange failed: before any byte of an answer arrived, or after.
enum Exchanged {
    Nothing(Failure),
    Partly(Failure),
}

struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    /// False once the server answered a malformed command: what follows on this connection is not trusted.
    reusable: bool,
}

impl Connection {
    async fn exchange(&mut self, wire: &[u8], count: usize, answers: &mut Vec<Outcome>) -> Result<(), Exchanged> {
        let transport = |error: io::Error| Failure::Transport(error.to_string());
        self.stream.write_all(wire).await.map_err(|error| Exchanged::Nothing(transport(error)))?;
        let mut received = false;
        while answers.len() < count {
            match parse(&mut self.buffer) {
                Ok(Some(parsed)) => {
                    if matches!(parsed, Err(Failure::Refused(_))) {
                        self.reusable = false;
                    }
                    answers.push(parsed);
                    continue;
                }
                Ok(None) => {}
                Err(detail) => return Err(Exchanged::Partly(Failure::Transport(detail))),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => {
                    let failure = Failure::Transport("memcached closed the connection".to_owned());
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

#[cfg(test)]
mod tests {
    use super::super::protocol::{Answer, Commands, ReadKind};
    use super::*;

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
        let pool = Pool::new(addr, Duration::from_secs(1), 4);
        let mut commands = Commands::default();
        commands.read("k", ReadKind::Plain);
        assert_eq!(pool.exchange(commands.wire(), 1).await, [Ok(Answer::default())]);
        // The pooled connection is closed by now (or will be when written to); the read goes out on a new one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.exchange(commands.wire(), 1).await, [Ok(Answer::default())]);
        server.await.unwrap();
    }
}
