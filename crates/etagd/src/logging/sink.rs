//! Where log lines go: an in-memory buffer that a writer thread empties to stdout every
//! [`FLUSH_EVERY`], or sooner once [`FLUSH_AT`] bytes are waiting (nginx's `access_log ... buffer= flush=`).
//!
//! A request thread only appends its line under a short lock: no system call and no wake-up per line, which
//! on two shared cores was a quarter of the sidecar's CPU per 304 with a channel to a writer thread
//! (BENCHMARKS.md, "Where the time goes"). The buffer is bounded ([`CAPACITY`]): when stdout does not keep up,
//! lines are dropped and counted, and the count is written once the writer catches up, so a blocked log
//! collector never blocks or grows the proxy.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The longest a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Waiting bytes that wake the writer before [`FLUSH_EVERY`].
pub const FLUSH_AT: usize = 64 << 10;
/// Waiting bytes past which new lines are dropped (and counted).
pub const CAPACITY: usize = 4 << 20;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closed: bool,
}

/// The appending side; cheap to clone. Lines appended after the [`SinkGuard`] is dropped are lost.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written everything appended before.
pub struct SinkGuard {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink whose writer thread writes to `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(Sink, SinkGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { lines: Vec::with_capacity(FLUSH_AT * 2), closed: false }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new().name("etagd-log".into()).spawn(move || write_out(&shared, out))?
        };
        Ok((Sink { shared: shared.clone() }, SinkGuard { shared, writer: Some(writer) }))
    }

    /// Appends one whole line (or several); never blocks on the output.
    pub fn append(&self, bytes: &[u8]) {
        let mut state = self.shared.state.lock();
        let before = state.lines.len();
        if state.closed || before + bytes.len() > CAPACITY {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.lines.extend_from_slice(bytes);
        // Wake the writer once, when the buffer crosses the mark, not for every line after it.
        if before < FLUSH_AT && state.lines.len() >= FLUSH_AT {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: swaps the buffer out under the lock and writes it without the lock.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        let closed = {
            let mut state = shared.state.lock();
            if !state.closed && state.lines.len() < FLUSH_AT {
                shared.wake.wait_for(&mut state, FLUSH_EVERY);
            }
            std::mem::swap(&mut state.lines, &mut spare);
            state.closed
        };
        // A log that cannot be written has nowhere to report that; the proxy goes on either way.
        let _ = out.write_all(&spare);
        spare.clear();
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(out, "etagd: {dropped} log lines dropped: the log output did not keep up");
        }
        let _ = out.flush();
        if closed {
            return;
        }
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Gives `tracing-subscriber`'s formatter a writer per event that appends to the sink: the formatter hands
/// each event over in one `write_all`, so lines never interleave.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// One event's writer (see [`Sink`]'s `MakeWriter`).
pub struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_appended_before_the_guard_drops_is_written_in_order() {
        let out = Captured::default();
        let (sink, guard) = Sink::spawn(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        sink.append(format!("t{t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let mine: Vec<_> = text.lines().filter(|l| l.starts_with(&format!("t{t} "))).collect();
            let expected: Vec<_> = (0..1000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines are whole and in order");
        }
    }

    #[test]
    fn lines_past_the_capacity_are_dropped_and_counted_not_buffered() {
        /// An output that blocks until released, as a stalled log collector would.
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Stalled {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock();
                while !*open {
                    cv.wait(&mut open);
                }
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Captured::default();
        let (sink, guard) = Sink::spawn(Stalled(gate.clone(), out.clone())).unwrap();
        let line = vec![b'x'; 1023].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        // The stalled writer holds at most one batch (at most the capacity) and the buffer at most the capacity,
        // so more than twice the capacity must drop lines, whenever the writer happens to take its batch.
        let total = (2 * CAPACITY + FLUSH_AT * 4) / line.len();
        for _ in 0..total {
            sink.append(&line);
        }
        assert!(sink.shared.state.lock().lines.len() <= CAPACITY, "the buffer never grows past its capacity");
        *gate.0.lock() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let written = text.lines().filter(|l| l.starts_with('x')).count();
        let report = text.lines().find(|l| l.contains("log lines dropped")).expect("the drop is reported");
        let dropped: usize = report.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(dropped > 0);
        assert_eq!(written + dropped, total, "every line is either written or counted as dropped");
    }
}
