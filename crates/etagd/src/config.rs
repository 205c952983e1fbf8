//! Configuration, read once before anything binds: flags with `ETAGD_*` environment fallbacks (clap), an
//! optional TOML file for route rules and tuning, then validation into [`Config`]. A bad value stops start-up
//! with a message naming it (exit 64).
//!
//! TOML (`--config etagd.toml`); every key optional:
//!
//! ```toml
//! namespace = "shop"             # same as --namespace
//! max_body_bytes = 67108864      # largest body stored (bodies over one Memcached item are stored in chunks)
//! max_object_fraction = 0.125    # admission: no object above this share of the smallest server's memory
//! validator = "timestamp"        # or "content": the xxh3-128 of the body
//! stale_while_revalidate = "0s"  # defaults for responses that do not say
//! stale_if_error = "0s"
//! stale_if_unreachable = "5m"   # a stale entry stands in while the app cannot be reached at all
//! honour_client_freshness = false  # true: a client's no-cache / max-age / min-fresh revalidate with the app
//! heuristic_freshness = false   # true: 10 % of the age since Last-Modified when no freshness is given
//! compress_types = ["text/*", "application/json"]  # what etagd compresses (see --compress)
//! ignore_cookies = ["_ga", "_ga_*", "_gid"]  # cookies that never make a request personal (default: none)
//! ignore_query = ["utm_*", "gclid", "fbclid"]  # left out of every key; the app still gets the full URL
//! targeted_cache_control = ["etagd-cache-control", "cdn-cache-control"]  # RFC 9213 fields obeyed, in order
//! strip_targeted_cache_control = false  # true: remove them from answers (default: passed on downstream)
//! untrusted_headers = ["forwarded", "x-forwarded-host", ...]  # dropped from peers not in --trusted-proxies;
//!                                # replaces the built-in list (etagd_client::exchange::UNTRUSTED_FORWARDING_HEADERS)
//!
//! [[route]]
//! prefix = "/api/servers"        # path prefix
//! ttl = "1h"                     # cacheable for this long even without headers; "forever" = until invalidated
//! negative_ttl = "30s"           # 404 and 410 without headers: this long instead of ttl (negative caching)
//! ttl_max = "1d"                 # caps every lifetime, the origin's too (or: ttl_override = "1h" replaces it)
//! tags = ["servers"]
//! stale_while_revalidate = "30s"
//! stale_if_error = "10m"
//! ignore_cookies = ["csrftoken"]  # more cookies that do not matter under this prefix
//! ignore_query = ["ref"]         # more parameters left out of the key under this prefix
//! key_query = ["page", "q"]      # or: only these parameters name a resource under this prefix
//! ```
//!
//! A request with any other cookie is neither served from nor stored into an entry whose freshness comes only
//! from a route's `ttl` (it may be someone's personalised page); what the origin marks fresh itself is shared as
//! RFC 9111 allows.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use etagd_client::cache::{DEFAULT_MAX_OBJECT_FRACTION, ValidatorMode};
use etagd_client::encoding::{Coding, CompressionPolicy};
pub use etagd_client::exchange::Route;
use etagd_client::exchange::{DEFAULT_MAX_BODY_BYTES, ExchangeConfig, OriginLimit, TrustedProxies};
use etagd_client::key::{MAX_PREFIX_DEPTH, Namespace, QueryFilter};
use serde::Deserialize;

mod args;
mod route;

use args::parse_duration;
pub use args::{Args, LogFormat};

/// The smallest `--max-header-bytes`: a request line and a few ordinary headers.
const MIN_HEADER_BYTES: usize = 1024;
/// The largest `--max-header-bytes`: below hyper's default read buffer (about 400 KB), which would refuse a
/// larger head first.
const MAX_HEADER_BYTES: usize = 256 << 10;

/// The TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    namespace: Option<String>,
    bridge_schema: Option<String>,
    max_body_bytes: Option<usize>,
    max_object_fraction: Option<f64>,
    validator: Option<String>,
    stale_while_revalidate: Option<String>,
    stale_if_error: Option<String>,
    stale_if_unreachable: Option<String>,
    #[serde(default)]
    honour_client_freshness: bool,
    #[serde(default)]
    heuristic_freshness: bool,
    compress_types: Option<Vec<String>>,
    #[serde(default)]
    ignore_cookies: Vec<String>,
    #[serde(default)]
    ignore_query: Vec<String>,
    targeted_cache_control: Option<Vec<String>>,
    untrusted_headers: Option<Vec<String>>,
    #[serde(default)]
    strip_targeted_cache_control: bool,
    #[serde(default, rename = "route")]
    routes: Vec<route::FileRoute>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy address.
    pub listen: SocketAddr,
    /// Upstream base URI (scheme and authority).
    pub upstream: http::Uri,
    /// Memcached servers; empty = embedded store.
    pub memcached: Vec<String>,
    /// Admin address.
    pub admin_listen: SocketAddr,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Key namespace.
    pub namespace: Namespace,
    /// The older key schema a rolling upgrade bridges (`--bridge-schema`).
    pub bridge_from: Option<&'static str>,
    /// The entry authentication key (`--entry-key`).
    pub entry_key: Option<etagd_client::store::authenticated::EntryKey>,
    /// Log format.
    pub log_format: LogFormat,
    /// Tokio worker threads.
    pub workers: usize,
    /// Largest stored body.
    pub max_body_bytes: usize,
    /// Admission: the largest object stored, as a fraction of the smallest server's memory.
    pub max_object_fraction: f64,
    /// Validator minting.
    pub validator: ValidatorMode,
    /// Memcached I/O timeout.
    pub memcached_timeout: Duration,
    /// See [`Args::memcached_bulk_timeout`].
    pub memcached_bulk_timeout: Duration,
    /// Memcached connect timeout.
    pub memcached_connect_timeout: Duration,
    /// Memcached back-off after a failure.
    pub memcached_backoff: Duration,
    /// Coalesce concurrent reads.
    pub memcached_batch: bool,
    /// Embedded store size.
    pub embedded_bytes: u64,
    /// In-process body cache size.
    pub body_cache_bytes: u64,
    /// Fill wait.
    pub fill_wait: Duration,
    /// Fill lease.
    pub fill_lease: Duration,
    /// Origin timeout (response headers), at most the fill lease.
    pub origin_timeout: Duration,
    /// Longest wait for the next frame of an origin body.
    pub origin_body_timeout: Duration,
    /// Longest time for a client to send a request head (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Default stale-while-revalidate, seconds.
    pub stale_while_revalidate_s: u32,
    /// Default stale-if-error, seconds.
    pub stale_if_error_s: u32,
    /// Route rules, longest prefix first.
    pub routes: Vec<Route>,
    /// Path segments that get a prefix tag.
    pub prefix_depth: u8,
    /// What etagd compresses.
    pub compression: CompressionPolicy,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Cookies that never make a request personal.
    pub ignore_cookies: Vec<String>,
    /// The cap on concurrent origin requests.
    pub origin_limit: Option<OriginLimit>,
    /// Query parameters left out of every key.
    pub query: QueryFilter,
    /// Honour a client's no-cache, max-age and min-fresh.
    pub client_freshness: bool,
    /// Heuristic freshness from Last-Modified.
    pub heuristic_freshness: bool,
    /// How long past freshness a stale entry stands in when the app cannot be reached.
    pub stale_if_unreachable_s: u32,
    /// Request headers dropped from untrusted peers.
    pub untrusted_headers: Vec<http::HeaderName>,
    /// Targeted cache-control fields obeyed, in order (RFC 9213).
    pub targeted_fields: Vec<http::HeaderName>,
    /// Remove the targeted fields from answers.
    pub strip_targeted: bool,
}

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A flag or key has a bad value.
    #[error("{name}: {reason}")]
    Invalid {
        /// The flag or key.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: name.to_owned(), reason: reason.into() }
}

fn seconds(name: &str, text: &str) -> Result<u64, ConfigError> {
    if text == "forever" {
        return Ok(u64::MAX);
    }
    parse_duration(text).map(|d| d.as_secs()).map_err(|e| invalid(name, e))
}

fn seconds_u32(name: &str, text: &str) -> Result<u32, ConfigError> {
    let secs = seconds(name, text)?;
    u32::try_from(secs).map_err(|_| invalid(name, "too long for a stale window"))
}

/// Validates cookie names (RFC 6265 section 4.1.1: a token), each optionally ending in `*` for a prefix.
fn cookie_names(name: &str, names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for cookie in &names {
        let bare = cookie.strip_suffix('*').unwrap_or(cookie);
        let token =
            !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}*".contains(&b));
        if !token {
            return Err(invalid(name, format!("{cookie:?} is not a cookie name (a trailing * matches a prefix)")));
        }
    }
    Ok(names)
}

fn socket(name: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| invalid(name, format!("{text:?} is not an address like 127.0.0.1:8080")))
}

impl Config {
    /// Validates flags and reads the config file they name.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: shown.clone(), reason: e.to_string() })?;
                toml::from_str(&text).map_err(|e| ConfigError::File { path: shown, reason: e.to_string() })?
            }
        };
        Self::build(args, file)
    }

    /// Parses flags as clap would (for tests: never touches the process environment beyond clap's own reads).
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, anyhow::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::from_args(Args::try_parse_from(args)?)?)
    }

    fn build(args: Args, file: FileConfig) -> Result<Self, ConfigError> {
        let listen = socket("--listen", &args.listen)?;
        let admin_listen = socket("--admin-listen", &args.admin_listen)?;
        let upstream: http::Uri = args.upstream.parse().map_err(|_| {
            invalid("--upstream", format!("{:?} is not a URL like http://127.0.0.1:8000", args.upstream))
        })?;
        if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
            return Err(invalid("--upstream", "use an http:// URL with a host and port, e.g. http://127.0.0.1:8000"));
        }
        if upstream.path() != "/" && !upstream.path().is_empty() {
            return Err(invalid("--upstream", "give only scheme, host and port; paths are forwarded as requested"));
        }
        let memcached: Vec<String> =
            args.memcached.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        for server in &memcached {
            let valid =
                server.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid("--memcached", format!("{server:?} is not HOST:PORT (e.g. mc-0:11211)")));
            }
        }
        let admin_token = args.admin_token.filter(|t| !t.is_empty());
        if !admin_listen.ip().is_loopback() && admin_token.is_none() {
            return Err(invalid(
                "--admin-listen",
                format!(
                    "{admin_listen} is not loopback: set --admin-token (ETAGD_ADMIN_TOKEN) so invalidation is not open"
                ),
            ));
        }
        let namespace_text = args.namespace.or(file.namespace).unwrap_or_else(|| "default".to_owned());
        let namespace = Namespace::new(&namespace_text).map_err(|e| invalid("--namespace", e.to_string()))?;
        let entry_key = args
            .entry_key
            .as_deref()
            .map(etagd_client::store::authenticated::EntryKey::new)
            .transpose()
            .map_err(|e| invalid("--entry-key", e.to_string()))?;
        let bridge_from = match args.bridge_schema.or(file.bridge_schema) {
            None => None,
            Some(schema) => Some(
                etagd_client::key::BRIDGEABLE_SCHEMAS.into_iter().find(|known| *known == schema).ok_or_else(|| {
                    invalid(
                        "--bridge-schema",
                        format!(
                            "{schema:?} is not a schema this release can bridge; use one of {:?}",
                            etagd_client::key::BRIDGEABLE_SCHEMAS
                        ),
                    )
                })?,
            ),
        };
        // Half the cores: the sidecar shares its machine with the app and a load balancer's connections, and with
        // batched Memcached reads one worker on a 2-core machine beat two (BENCHMARKS.md).
        let workers =
            args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
        if workers == 0 || workers > 512 {
            return Err(invalid("--workers", "use 1 to 512"));
        }
        let max_body_bytes = args.max_body_bytes.or(file.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be above 0"));
        }
        let max_object_fraction =
            args.max_object_fraction.or(file.max_object_fraction).unwrap_or(DEFAULT_MAX_OBJECT_FRACTION);
        if !(max_object_fraction > 0.0 && max_object_fraction <= 1.0) {
            return Err(invalid("--max-object-fraction", format!("{max_object_fraction}: use a fraction in (0, 1]")));
        }
        let validator = match file.validator.as_deref() {
            None | Some("timestamp") => ValidatorMode::Timestamp,
            Some("content") => ValidatorMode::Content,
            Some(other) => return Err(invalid("validator", format!("{other:?}: use \"timestamp\" or \"content\""))),
        };
        let stale_while_revalidate_s = match &file.stale_while_revalidate {
            Some(text) => seconds_u32("stale_while_revalidate", text)?,
            None => 0,
        };
        let stale_if_unreachable_s = match &file.stale_if_unreachable {
            Some(text) => seconds_u32("stale_if_unreachable", text)?,
            None => 300,
        };
        let stale_if_error_s = match &file.stale_if_error {
            Some(text) => seconds_u32("stale_if_error", text)?,
            None => 0,
        };
        let routes = route::routes(file.routes)?;
        let ignore_cookies = cookie_names("ignore_cookies", file.ignore_cookies)?;
        let header_names = |name: &str, names: Vec<String>| -> Result<Vec<http::HeaderName>, ConfigError> {
            names
                .iter()
                .map(|header| {
                    http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                        .map_err(|_| invalid(name, format!("{header:?} is not a header field name")))
                })
                .collect()
        };
        let untrusted_headers = match file.untrusted_headers {
            None => ExchangeConfig::default().untrusted_headers,
            Some(names) => header_names("untrusted_headers", names)?,
        };
        let targeted_fields = match file.targeted_cache_control {
            None => etagd_client::cacheability::Policy::default().targeted,
            Some(names) => header_names("targeted_cache_control", names)?,
        };
        let trusted_proxies =
            TrustedProxies::parse(&args.trusted_proxies).map_err(|e| invalid("--trusted-proxies", e.to_string()))?;
        let mut compression = CompressionPolicy {
            codings: Vec::new(),
            level: args.compress_level,
            min_bytes: args.compress_min_bytes,
            max_bytes: args.compress_max_bytes,
            on_demand: args.compress_on_demand,
            ..CompressionPolicy::default()
        };
        if !args.compress.trim().eq_ignore_ascii_case("off") {
            for token in args.compress.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let coding = Coding::parse(token).ok_or_else(|| {
                    invalid("--compress", format!("{token:?}: use gzip, br, zstd (comma separated) or off"))
                })?;
                if !compression.codings.contains(&coding) {
                    compression.codings.push(coding);
                }
            }
        }
        if compression.max_bytes < compression.min_bytes {
            return Err(invalid(
                "--compress-max-bytes",
                "must be at least --compress-min-bytes (or use --compress off)",
            ));
        }
        if let Some(types) = file.compress_types {
            compression.types = types.into_iter().map(|t| t.to_ascii_lowercase()).collect();
        }
        if args.fill_lease.is_zero() {
            return Err(invalid("--fill-lease", "must be above 0 (e.g. 30s)"));
        }
        let origin_timeout = args.origin_timeout;
        if origin_timeout.is_zero() {
            return Err(invalid("--origin-timeout", "must be above 0 (e.g. 30s)"));
        }
        for (name, value) in
            [("--origin-body-timeout", args.origin_body_timeout), ("--header-read-timeout", args.header_read_timeout)]
        {
            if value.is_zero() {
                return Err(invalid(name, "must be above 0 (e.g. 30s)"));
            }
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&args.max_header_bytes) {
            return Err(invalid(
                "--max-header-bytes",
                format!("{}: use {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} bytes", args.max_header_bytes),
            ));
        }
        if args.prefix_depth > MAX_PREFIX_DEPTH {
            return Err(invalid(
                "--prefix-depth",
                format!(
                    "{}: use 0 (off) to {MAX_PREFIX_DEPTH}; each level is a counter read per lookup",
                    args.prefix_depth
                ),
            ));
        }
        if args.max_in_flight == 0 {
            return Err(invalid("--max-in-flight", "must be above 0 (e.g. 4096)"));
        }
        Ok(Self {
            listen,
            upstream,
            memcached,
            admin_listen,
            admin_token,
            namespace,
            bridge_from,
            entry_key,
            log_format: args.log_format,
            workers,
            max_body_bytes,
            max_object_fraction,
            validator,
            memcached_timeout: args.memcached_timeout,
            memcached_bulk_timeout: args.memcached_bulk_timeout,
            memcached_connect_timeout: args.memcached_connect_timeout,
            memcached_backoff: args.memcached_backoff,
            memcached_batch: args.memcached_batch,
            embedded_bytes: args.embedded_bytes,
            body_cache_bytes: args.body_cache_bytes,
            fill_wait: args.fill_wait,
            fill_lease: args.fill_lease,
            origin_timeout,
            origin_body_timeout: args.origin_body_timeout,
            header_read_timeout: args.header_read_timeout,
            max_header_bytes: args.max_header_bytes,
            max_in_flight: args.max_in_flight,
            drain_timeout: args.drain_timeout,
            stale_while_revalidate_s,
            stale_if_error_s,
            routes,
            prefix_depth: args.prefix_depth,
            compression,
            trusted_proxies,
            ignore_cookies,
            query: QueryFilter { ignore: file.ignore_query, keep: None },
            targeted_fields,
            untrusted_headers,
            stale_if_unreachable_s,
            client_freshness: file.honour_client_freshness,
            heuristic_freshness: file.heuristic_freshness,
            strip_targeted: file.strip_targeted_cache_control,
            origin_limit: (args.origin_max_concurrency > 0).then(|| OriginLimit {
                max_concurrency: args.origin_max_concurrency,
                max_queue: args.origin_queue,
                ..OriginLimit::default()
            }),
        })
    }

    /// The request exchange's settings.
    pub fn exchange(&self) -> ExchangeConfig {
        ExchangeConfig {
            stale_while_revalidate_s: self.stale_while_revalidate_s,
            stale_if_error_s: self.stale_if_error_s,
            max_body_bytes: self.max_body_bytes,
            compression: self.compression.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            ignore_cookies: self.ignore_cookies.clone(),
            origin_limit: self.origin_limit,
            query: self.query.clone(),
            targeted_fields: self.targeted_fields.clone(),
            untrusted_headers: self.untrusted_headers.clone(),
            stale_if_unreachable_s: self.stale_if_unreachable_s,
            client_freshness: self.client_freshness,
            heuristic_freshness: self.heuristic_freshness,
            strip_targeted: self.strip_targeted,
            ..ExchangeConfig::default()
        }
        .with_routes(self.routes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["etagd"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.memcached.is_empty());
        assert_eq!(config.max_body_bytes, 64 << 20);
        assert_eq!(config.max_object_fraction, 0.125);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases = [
            (&["--listen", "nowhere"][..], "--listen"),
            (&["--upstream", "ftp://x"][..], "--upstream"),
            (&["--upstream", "http://x:1/path"][..], "--upstream"),
            (&["--memcached", "mc-0"][..], "--memcached"),
            (&["--admin-listen", "0.0.0.0:9091"][..], "--admin-token"),
            (&["--namespace", "has space"][..], "--namespace"),
            (&["--memcached-timeout", "soon"][..], "100ms"),
            (&["--workers", "0"][..], "--workers"),
            (&["--compress", "gzip,lz4"][..], "--compress"),
            (&["--trusted-proxies", "10.0.0.0/8,ingress"][..], "--trusted-proxies"),
            (&["--max-header-bytes", "100"][..], "--max-header-bytes"),
            (&["--max-in-flight", "0"][..], "--max-in-flight"),
            (&["--origin-body-timeout", "0s"][..], "--origin-body-timeout"),
            (&["--header-read-timeout", "0s"][..], "--header-read-timeout"),
            (&["--prefix-depth", "9"][..], "--prefix-depth"),
            (&["--max-object-fraction", "0"][..], "--max-object-fraction"),
            (&["--max-object-fraction", "1.5"][..], "--max-object-fraction"),
            (&["--compress-max-bytes", "100"][..], "--compress-max-bytes"),
        ];
        for (args, needle) in cases {
            let error = parse(args).unwrap_err();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    #[test]
    fn timeouts_and_the_short_renewed_lease() {
        let config = parse(&[]).unwrap();
        assert_eq!((config.fill_lease, config.origin_timeout), (Duration::from_secs(5), Duration::from_secs(60)));
        // The lease is renewed while the origin answers, so a slow view needs no long lease.
        let config = parse(&["--origin-timeout", "120s", "--fill-lease", "5s"]).unwrap();
        assert_eq!(config.origin_timeout, Duration::from_secs(120));
        assert!(parse(&["--origin-timeout", "0s"]).unwrap_err().contains("--origin-timeout"));
        assert!(parse(&["--fill-lease", "0s"]).unwrap_err().contains("--fill-lease"));
    }

    #[test]
    fn connection_limits_have_defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(65));
        assert_eq!(config.max_header_bytes, 64 << 10);
        assert_eq!(config.max_in_flight, 4096);
        assert_eq!(config.origin_body_timeout, Duration::from_secs(30));
    }

    #[test]
    fn trusted_proxies_are_parsed() {
        use etagd_client::key::Forwarding;
        let config = parse(&["--trusted-proxies", "10.0.0.0/8, 127.0.0.1"]).unwrap();
        let peer = |text: &str| Some(text.parse().unwrap());
        assert_eq!(config.trusted_proxies.decide(peer("10.2.3.4:1")), Forwarding::Trusted);
        assert_eq!(config.trusted_proxies.decide(peer("192.0.2.1:1")), Forwarding::Untrusted);
        assert!(parse(&[]).unwrap().trusted_proxies.is_empty(), "nobody is trusted by default");
    }

    #[test]
    fn memcached_list_and_token() {
        let config = parse(&["--memcached", "a:1, b:2", "--admin-listen", "0.0.0.0:9", "--admin-token", "t"]).unwrap();
        assert_eq!(config.memcached, ["a:1", "b:2"]);
        assert_eq!(config.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn file_routes() {
        let file: FileConfig = toml::from_str(
            r#"
            namespace = "shop"
            ignore_cookies = ["_ga", "_ga_*"]
            [[route]]
            prefix = "/api"
            ttl = "forever"
            tags = ["api"]
            ignore_cookies = ["csrftoken"]
            [[route]]
            prefix = "/api/servers"
            ttl = "1h"
            tags = ["servers"]
            stale_if_error = "10m"
            "#,
        )
        .unwrap();
        let config = Config::build(Args::try_parse_from(["etagd"]).unwrap(), file).unwrap();
        assert_eq!(config.namespace.as_str(), "shop");
        let exchange = config.exchange();
        let route = exchange.route_for("/api/servers/x");
        assert_eq!((route.ttl_s, route.stale_if_error_s), (Some(3600), Some(600)));
        assert_eq!(exchange.route_for("/api/other").ttl_s, Some(u64::MAX));
        assert_eq!(exchange.route_for("/api/other").ignore_cookies, ["csrftoken"]);
        assert_eq!(exchange.ignore_cookies, ["_ga", "_ga_*"]);
        assert_eq!(exchange.route_for("/static"), &exchange.fallback);
        let bad_cookie: FileConfig = toml::from_str("ignore_cookies = [\"a b\"]").unwrap();
        let error = Config::build(Args::try_parse_from(["etagd"]).unwrap(), bad_cookie).unwrap_err();
        assert!(error.to_string().contains("ignore_cookies"), "{error}");
        assert!(toml::from_str::<FileConfig>("unknown = 1").is_err());
        let bad: FileConfig = toml::from_str("[[route]]\nprefix = \"api\"").unwrap();
        assert!(Config::build(Args::try_parse_from(["etagd"]).unwrap(), bad).is_err());
    }
}
