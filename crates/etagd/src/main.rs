//! The `etagd` binary: parse and validate config (exit 64 on a bad one), init logging, build the runtime, start,
//! wait for SIGTERM or Ctrl-C, drain.

use std::process::ExitCode;

/// glibc's malloc took about an eighth of the sidecar's CPU on the 304 path (many small, short-lived
/// allocations across threads); mimalloc's thread-local free lists cut that (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use etagd::config::{Args, Config, LogFormat};

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("etagd: {error}");
            return ExitCode::from(64);
        }
    };
    let _logs = init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(config.workers).enable_all().build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("etagd: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("etagd: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let running = etagd::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Logs go to stdout through a writer thread: the access log writes a line per request, and formatting it on
/// the request's thread but handing the write to another keeps a syscall per request off the hot path. The
/// writer thread buffers what it drains and flushes when the queue is empty, so under load one `write` carries
/// many lines (Rust's stdout alone flushes at every newline: a syscall a request, on the same two cores as the
/// proxy). The guard flushes what is queued when `main` returns. Colour only on a terminal: escape codes in a log file or a
/// collector's pipe are noise.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ETAGD_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) =
        tracing_appender::non_blocking(std::io::BufWriter::with_capacity(64 << 10, std::io::stdout()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
