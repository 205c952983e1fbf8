//! Run with: cargo run -p etagd-client --example axum_app
//!
//! Options (flags win over the environment):
//!
//! ```text
//! --port N              or AXUM_APP_PORT        listen on 127.0.0.1:N (default 3000)
//! --memcached HOST:PORT or AXUM_APP_MEMCACHED   use memcached instead of the embedded store
//! ```
//!
//! An axum service whose slow list of servers (500 ms per render) is cached by `EtagCacheLayer` with the tag
//! `servers`, and whose POST adds a server: the seed's Django `@etag` + `cache_response` + post-save signal, in
//! process. The POST handler invalidates nothing itself: the layer invalidates `/api/servers` when a POST to it
//! succeeds, for every copy sharing the store.
//!
//! Two copies on different ports with the same `--memcached` share one cache when clients name the same host,
//! as they do behind a load balancer. The host is part of the cache key, so the curl lines the example prints
//! send `Host: app.example` to whichever port they use:
//!
//! ```text
//! cargo run -p etagd-client --example axum_app -- --port 13001 --memcached 127.0.0.1:11211 &
//! cargo run -p etagd-client --example axum_app -- --port 13002 --memcached 127.0.0.1:11211 &
//! curl -si -H 'Host: app.example' http://127.0.0.1:13001/api/servers   # miss on copy 1
//! curl -si -H 'Host: app.example' http://127.0.0.1:13002/api/servers   # hit on copy 2, same ETag
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::key::Namespace;
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::Store;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::memory::MemoryStore;

/// How long a render takes, to make hits visible.
const RENDER_TIME: Duration = Duration::from_millis(500);

/// EX_USAGE: a bad command line.
const EXIT_USAGE: i32 = 64;

#[derive(Clone)]
struct AppState {
    servers: Arc<Mutex<Vec<String>>>,
}

/// The slow view the layer caches.
async fn list_servers(State(state): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    tokio::time::sleep(RENDER_TIME).await;
    let servers = state.servers.lock().expect("no handler panics while holding the lock").clone();
    let items: Vec<String> = servers.iter().map(|name| format!("{name:?}")).collect();
    ([("content-type", "application/json")], format!("[{}]\n", items.join(",")))
}

/// Adds a server (the request body is its name). The layer around it invalidates `/api/servers` once this
/// answers 201; a handler that changes other views would name their tags in `Etagd-Invalidate`.
async fn add_server(State(state): State<AppState>, name: String) -> (StatusCode, String) {
    let name = name.trim().to_owned();
    if name.is_empty() {
        return (StatusCode::BAD_REQUEST, "send the server name as the request body\n".to_owned());
    }
    state.servers.lock().expect("no handler panics while holding the lock").push(name.clone());
    (StatusCode::CREATED, format!("added {name}\n"))
}

struct Options {
    port: u16,
    memcached: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut port = std::env::var("AXUM_APP_PORT").ok();
    let mut memcached = std::env::var("AXUM_APP_MEMCACHED").ok().filter(|value| !value.is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = Some(args.next().ok_or("--port needs a value")?),
            "--memcached" => memcached = Some(args.next().ok_or("--memcached needs HOST:PORT")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port = match port {
        Some(port) => port.parse().map_err(|_| format!("--port {port:?} is not a port number"))?,
        None => 3000,
    };
    Ok(Options { port, memcached })
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("axum_app: {message}");
            }
            eprintln!("usage: cargo run -p etagd-client --example axum_app -- [--port N] [--memcached HOST:PORT]");
            std::process::exit(EXIT_USAGE);
        }
    };

    let (store, store_name): (Arc<dyn Store>, String) = match &options.memcached {
        Some(addr) => {
            let config = MemcachedConfig { servers: vec![addr.clone()], ..MemcachedConfig::default() };
            match MemcachedStore::connect(config).await {
                Ok(store) => (Arc::new(store), format!("memcached {addr}")),
                Err(error) => {
                    eprintln!("axum_app: {error}");
                    std::process::exit(EXIT_USAGE);
                }
            }
        }
        None => (Arc::new(MemoryStore::new(64 << 20)), "the embedded store".to_owned()),
    };
    let namespace = Namespace::new("axum-example").expect("a valid namespace literal");
    let cache = Cache::new(store, CacheConfig { namespace, ..CacheConfig::default() });

    let state = AppState { servers: Arc::new(Mutex::new(vec!["web-1".into(), "web-2".into()])) };
    // Around the whole router: GET and HEAD are cached, and a successful POST invalidates its URL.
    let cached = EtagCacheLayer::new(cache).tags(["servers"]);
    let app = Router::new().route("/api/servers", get(list_servers).post(add_server)).with_state(state).layer(cached);

    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("axum_app: cannot listen on 127.0.0.1:{}: {error}", options.port);
            std::process::exit(1);
        }
    };
    let url = format!("http://127.0.0.1:{}/api/servers", options.port);
    // The Host a load balancer would pass on: the same for every copy, so copies share entries.
    let host = "-H 'Host: app.example'";
    println!("axum_app on {url} (cache: {store_name}); try (any copy's port, same Host):");
    println!("  curl -si {host} {url}    # ~500 ms: Cache-Status: etagd; fwd=uri-miss; ...; stored");
    println!("  curl -si {host} {url}    # at once: Cache-Status: etagd; hit, same ETag");
    println!("  curl -si {host} -H 'If-None-Match: \"<etag from above>\"' {url}    # 304 Not Modified");
    println!("  curl -si {host} -X POST -d web-3 {url}    # adds a server; the layer invalidates the list");
    println!("  curl -si {host} {url}    # ~500 ms again, new ETag");
    println!("Ctrl-C stops it.");

    let shutdown = async {
        // If the signal cannot be installed, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        eprintln!("axum_app: server failed: {error}");
        std::process::exit(1);
    }
}
