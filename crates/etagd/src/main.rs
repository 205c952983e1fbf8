//! The `etagd` binary: parse and validate config (exit 64 on a bad one), init logging, build the runtime, start,
//! wait for SIGTERM or Ctrl-C, drain.

use std::process::ExitCode;

/// glibc's malloc took about an eighth of the sidecar's CPU on the 304 path (many small, short-lived
/// allocations across threads); mimalloc's thread-local free lists cut that (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use etagd::config::{Args, Config};

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("etagd: {error}");
            return ExitCode::from(64);
        }
    };
    let _logs = match etagd::logging::init(config.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("etagd: cannot start the log writer thread: {error}");
            return ExitCode::from(1);
        }
    };
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
