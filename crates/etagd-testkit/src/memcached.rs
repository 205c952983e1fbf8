//! One real `memcached` process per test, on a free loopback port, killed when the handle drops.
//!
//! Tests run against the real server rather than a fake because the cache's correctness rests on memcached's
//! own lease, CAS and soft-delete behaviour. `make test` installs the binary (`scripts/install-test-deps.sh`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly spawned memcached may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How many times to pick another port when the chosen one was taken between picking and binding.
const PORT_ATTEMPTS: usize = 5;
/// Connect and read timeout for the raw `stats` command.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `memcached` (`-l 127.0.0.1 -p PORT -U 0 -m 64 -t 1`, plus `-u root` when running as root).
///
/// The process is killed when the handle drops, so each test owns its server for exactly its own lifetime.
#[derive(Debug)]
pub struct Memcached {
    port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
    // Kept open (never read while running) so memcached never writes to a closed pipe.
    _stderr: Option<ChildStderr>,
}

impl Memcached {
    /// Starts memcached with the default arguments.
    ///
    /// # Panics
    ///
    /// When the `memcached` binary is missing (run `make test`, which installs it) or the server does not
    /// start within 10 seconds.
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// Starts memcached with extra arguments appended to the defaults, e.g. `&["-I", "2m"]`.
    ///
    /// # Panics
    ///
    /// As [`Memcached::start`].
    pub fn start_with(args: &[&str]) -> Memcached {
        let extra_args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_ready(port, &extra_args) {
                Ok((child, stderr)) => {
                    return Memcached { port, extra_args, child: Some(child), _stderr: Some(stderr) };
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("memcached did not start after {PORT_ATTEMPTS} attempts: {last_failure}");
    }

    /// The address to point a client at: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across [`Memcached::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server now, as if the node died. Idempotent. Clients see refused connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._stderr = None;
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts connections and buffers requests, but nothing is
    /// ever answered, like a Memcached that stops answering mid-batch.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a [`pause`](Self::pause)d server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("memcached is running");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill {signal} memcached failed");
    }

    /// Starts the server again on the same port after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match spawn_ready(self.port, &self.extra_args) {
                Ok((child, stderr)) => {
                    self.child = Some(child);
                    self._stderr = Some(stderr);
                    return;
                }
                Err(failure) => {
                    last_failure = failure;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("memcached did not restart on port {}: {last_failure}", self.port);
    }

    /// The server's `stats` as name/value pairs (`curr_items`, `get_hits`, `pid`, ...).
    ///
    /// # Panics
    ///
    /// When the server is stopped or does not answer.
    pub fn stats(&self) -> HashMap<String, String> {
        raw_stats(self.port).unwrap_or_else(|error| panic!("stats from memcached {}: {error}", self.addr()))
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Whether this process runs as root (memcached then refuses to start without `-u root`). Read from
/// `/proc/self/status` to stay free of libc.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|real| real == "0"))
        })
        .unwrap_or(false)
}

/// Spawns memcached on `port` and waits until it answers `stats` with its own pid. Returns why it failed
/// (port clash, early exit, deadline) so the caller can retry on another port.
fn spawn_ready(port: u16, extra_args: &[String]) -> Result<(Child, ChildStderr), String> {
    let mut command = Command::new("memcached");
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-t", "1"]);
    if running_as_root() {
        command.args(["-u", "root"]);
    }
    command.args(extra_args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "the memcached binary is not on PATH; run `make test`, which installs test dependencies \
             (scripts/install-test-deps.sh)"
        ),
        Err(error) => panic!("cannot spawn memcached: {error}"),
    };
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut output = String::new();
            let _ = stderr.read_to_string(&mut output);
            return Err(format!("memcached on port {port} exited with {status}: {}", output.trim()));
        }
        // Another process may own the port while ours is still starting: only a server reporting our
        // child's pid counts as ready.
        let ours = raw_stats(port).is_ok_and(|stats| stats.get("pid") == Some(&child.id().to_string()));
        if ours {
            return Ok((child, stderr));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("memcached on port {port} did not accept connections within {START_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `stats` over a fresh connection and parses `STAT name value` lines up to `END`.
fn raw_stats(port: u16) -> std::io::Result<HashMap<String, String>> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, STATS_TIMEOUT)?;
    stream.set_read_timeout(Some(STATS_TIMEOUT))?;
    stream.set_write_timeout(Some(STATS_TIMEOUT))?;
    stream.write_all(b"stats\r\n")?;
    let mut stats = HashMap::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before END"));
        }
        let line = line.trim_end();
        if line == "END" {
            return Ok(stats);
        }
        let mut fields = line.splitn(3, ' ');
        if let (Some("STAT"), Some(name), Some(value)) = (fields.next(), fields.next(), fields.next()) {
            stats.insert(name.to_owned(), value.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_reports_stats_and_restarts_on_the_same_port() {
        let mut server = Memcached::start_with(&["-I", "2m"]);
        let stats = server.stats();
        assert_eq!(stats.get("curr_items").map(String::as_str), Some("0"));
        assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port()));
        let port = server.port();
        let first_pid = stats.get("pid").cloned();
        server.stop();
        assert!(raw_stats(port).is_err(), "a stopped server must refuse connections");
        server.restart();
        assert_eq!(server.port(), port);
        assert_ne!(server.stats().get("pid").cloned(), first_pid);
        assert_eq!(server.stats().get("limit_maxbytes").map(String::as_str), Some("67108864"));
    }

    #[test]
    fn two_servers_get_two_ports() {
        let (a, b) = (Memcached::start(), Memcached::start());
        assert_ne!(a.port(), b.port());
    }
}
