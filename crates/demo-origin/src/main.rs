//! `demo-origin`: the app server behind etagd in the README quick start, docker-compose, the Dockerfile and the
//! benchmarks. It knows nothing about shared caching: it sends `Cache-Control`, an `ETag` on `/bytes/{n}` only,
//! and a `Surrogate-Key` on its slow `/api/servers` view. Routes are listed in `routes.rs`.
//!
//! Run with `cargo run --release -p etagd-demo-origin -- --listen 127.0.0.1:8000 --delay-ms 500 --name app-1`.

mod cli;
mod conditional;
mod payload;
mod routes;
mod servers;
mod stream;

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();

    let state = Arc::new(routes::AppState::new(args.delay()));
    let app = routes::app(state, args.name.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick a free address with --listen", args.listen))?;
    let bound = listener.local_addr().context("cannot read the bound address")?;
    // Scripts and tests read this line to learn the port when --listen asked for port 0.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "demo-origin listening on http://{bound}").context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")?;
    drop(stdout);
    tracing::info!(%bound, delay_ms = args.delay_ms, name = ?args.name, "demo-origin started");

    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("the server failed")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send), so in-flight requests can finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
