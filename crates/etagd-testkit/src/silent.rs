//! A TCP server that accepts connections and never replies: what a hung memcached (or a black-holed network
//! path after the handshake) looks like to a client.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A listener on 127.0.0.1 that accepts every connection, holds it open, reads nothing and writes nothing.
/// Dropping it closes the listener and every accepted connection.
#[derive(Debug)]
pub struct SilentServer {
    addr: String,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Binds a free loopback port and starts accepting.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (the test cannot run at all then).
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a silent server");
        let addr = listener.local_addr().expect("a bound listener has an address").to_string();
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let acceptor = std::thread::Builder::new()
            .name("silent-server".into())
            .spawn(move || accept_and_hold(&listener, &flag))
            .expect("spawn the silent server's accept thread");
        SilentServer { addr, stopping, acceptor: Some(acceptor) }
    }

    /// The address to point a client at (`127.0.0.1:PORT`).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }
}

/// Accepts until told to stop, keeping every connection open so the peer sees neither data nor EOF.
fn accept_and_hold(listener: &TcpListener, stopping: &AtomicBool) {
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        let accepted: io::Result<(TcpStream, _)> = listener.accept();
        if stopping.load(Ordering::Acquire) {
            return;
        }
        if let Ok((stream, _)) = accepted {
            held.push(stream);
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // accept() blocks: one connection of our own wakes the thread so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;

    #[test]
    fn accepts_and_never_answers() {
        let server = SilentServer::start();
        let mut stream = TcpStream::connect(server.addr()).expect("connect to the silent server");
        stream.write_all(b"mn\r\n").expect("write a request");
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("set a read timeout");
        let mut buffer = [0u8; 16];
        let error = stream.read(&mut buffer).expect_err("the silent server must not answer");
        assert!(matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{error}");
    }
}
