//! Command-line flags of the demo origin, each with a `DEMO_ORIGIN_*` environment fallback so that
//! docker-compose and Kubernetes can configure it without a command line.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;

/// The demo origin: an app server that knows nothing about caching beyond sending `Cache-Control`.
#[derive(Debug, Clone, Parser)]
#[command(name = "demo-origin", version, about)]
pub(crate) struct Args {
    /// Address to listen on (use port 0 to let the kernel pick; the bound address is printed).
    #[arg(long, env = "DEMO_ORIGIN_LISTEN", default_value = "127.0.0.1:8000")]
    pub(crate) listen: SocketAddr,

    /// Milliseconds the slow view on GET /api/* sleeps before answering (the seed's Django view took 17.1 s).
    #[arg(long, env = "DEMO_ORIGIN_DELAY_MS", default_value_t = 0)]
    pub(crate) delay_ms: u64,

    /// Replica name, sent back in an `X-Served-By` header on every response.
    #[arg(long, env = "DEMO_ORIGIN_NAME", value_parser = parse_name)]
    pub(crate) name: Option<HeaderValue>,
}

impl Args {
    /// The simulated view time as a [`Duration`].
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
}

/// A replica name must fit in a header value, so reject it here rather than fail on every response.
fn parse_name(raw: &str) -> Result<HeaderValue, String> {
    if raw.is_empty() {
        return Err("the replica name is empty; pass a short name such as `app-1`".to_owned());
    }
    HeaderValue::from_str(raw)
        .map_err(|_| "the replica name must be visible ASCII; pass a short name such as `app-1`".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(argv: &[&str], expected: Result<(&str, u64, Option<&str>), ()>) {
        let parsed = Args::try_parse_from(std::iter::once("demo-origin").chain(argv.iter().copied()));
        match (parsed, expected) {
            (Ok(args), Ok((listen, delay_ms, name))) => {
                assert_eq!(args.listen.to_string(), listen, "{argv:?}");
                assert_eq!(args.delay_ms, delay_ms, "{argv:?}");
                assert_eq!(args.name.as_ref().map(|v| v.to_str().expect("ascii")), name, "{argv:?}");
            }
            (Err(_), Err(())) => {}
            (got, want) => panic!("{argv:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_flags() {
        check(&[], Ok(("127.0.0.1:8000", 0, None)));
        check(
            &["--listen", "127.0.0.1:0", "--delay-ms", "17100", "--name", "app-1"],
            Ok(("127.0.0.1:0", 17100, Some("app-1"))),
        );
        check(&["--listen", "localhost"], Err(()));
        check(&["--delay-ms", "-1"], Err(()));
        check(&["--name", ""], Err(()));
        check(&["--name", "bad\nname"], Err(()));
    }
}
