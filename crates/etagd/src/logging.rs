//! Logging: every line goes to stdout through one buffered [`sink::Sink`] (no system call or wake-up per
//! line); the per-request access log (`etagd::access`) is written from each request's report ([`access`]),
//! everything else goes through `tracing-subscriber`'s formatter. `ETAGD_LOG` filters both (default `info`;
//! `etagd::access=off` silences the access log alone).

pub mod access;
pub mod sink;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the process's subscriber. The guard writes what is buffered when it drops (at the end of `main`).
pub fn init(format: LogFormat) -> std::io::Result<sink::SinkGuard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ETAGD_LOG").unwrap_or_else(|_| "info".into());
    // Colour only on a terminal: escape codes in a log file or a collector's pipe are noise.
    let ansi = std::io::stdout().is_terminal();
    let (sink, guard) = sink::Sink::spawn(std::io::stdout())?;
    // The access log is written by `access`; an `etagd::access` event from elsewhere is not formatted twice.
    let others = || filter_fn(|meta| meta.target() != access::TARGET);
    let registry = tracing_subscriber::registry().with(filter);
    // Two arms because the text and JSON formatters are different types.
    let shape = match format {
        LogFormat::Text => {
            registry
                .with(tracing_subscriber::fmt::layer().with_writer(sink.clone()).with_ansi(ansi).with_filter(others()))
                .init();
            access::Shape::Text
        }
        LogFormat::Json => {
            registry
                .with(tracing_subscriber::fmt::layer().json().with_writer(sink.clone()).with_filter(others()))
                .init();
            access::Shape::Json
        }
    };
    access::install(sink, shape);
    Ok(guard)
}
