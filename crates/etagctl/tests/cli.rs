//! `etagctl` against its built binary: entries are filled through the library over a real memcached, then the
//! CLI flushes, inspects and measures them; admin mode runs against a small axum imitation of the sidecar's
//! admin API. Every test has its own memcached (or namespace) so tests never see each other's keys.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assert_cmd::Command;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use etagd_client::cache::{Cache, CacheConfig, FillResponse, Lookup, LookupRequest};
use etagd_client::cacheability::Freshness;
use etagd_client::etag::EntityTag;
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::store::Store;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_testkit::{Memcached, SilentServer, unique_namespace};
use http::HeaderMap;
use predicates::prelude::*;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

// === helpers ===

/// The binary with none of its environment variables inherited, and a hard stop so a hang fails the test.
fn etagctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_etagctl"));
    for name in ["ETAGD_MEMCACHED", "ETAGCTL_ADMIN", "ETAGD_ADMIN_TOKEN", "ETAGD_NAMESPACE"] {
        command.env_remove(name);
    }
    command.timeout(Duration::from_secs(10));
    command
}

/// `etagctl --memcached ADDR --namespace NS ...`.
fn direct(addr: &str, namespace: &str) -> Command {
    let mut command = etagctl();
    command.args(["--memcached", addr, "--namespace", namespace]);
    command
}

fn runtime() -> Runtime {
    Runtime::new().expect("a tokio runtime")
}

/// A cache in `namespace` over the test's memcached, as a sidecar would build it.
fn cache(rt: &Runtime, addr: &str, namespace: &str) -> Cache {
    let config = MemcachedConfig {
        servers: vec![addr.to_owned()],
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(1),
        ..MemcachedConfig::default()
    };
    let store = rt.block_on(MemcachedStore::connect(config)).expect("a memcached store");
    let config =
        CacheConfig { namespace: Namespace::new(namespace).expect("a valid namespace"), ..CacheConfig::default() };
    Cache::new(Arc::new(store), config)
}

/// Stores a response for `url` with `tags` and the origin validator `etag`; returns the ETag sent to clients.
fn fill(rt: &Runtime, cache: &Cache, url: &str, tags: &[&str], etag: &str) -> String {
    let resource = ResourceKey::from_url(url).expect("a valid url");
    let headers = HeaderMap::new();
    rt.block_on(async {
        let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
        let Lookup::Miss(fill) = cache.lookup(request).await else { panic!("{url} should miss before the fill") };
        let response = FillResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), Bytes::from_static(b"text/plain"))],
            body: Bytes::from_static(b"hello from the origin"),
            freshness: Freshness {
                fresh_for_s: 300,
                initial_age_s: 0,
                stale_while_revalidate_s: 0,
                stale_if_error_s: 0,
                must_revalidate: false,
            },
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            vary: Vec::new(),
            etag: EntityTag::parse(etag),
            codings: Vec::new(),
        };
        fill.commit(response).await.expect("the fill commits").etag.clone()
    })
}

/// What a lookup of `url` finds now: `hit`, `miss`, ...
fn lookup(rt: &Runtime, cache: &Cache, url: &str) -> &'static str {
    let resource = ResourceKey::from_url(url).expect("a valid url");
    let headers = HeaderMap::new();
    rt.block_on(async {
        let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
        cache.lookup(request).await.label()
    })
}

/// A loopback port nothing listens on.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = listener.local_addr().expect("an address").to_string();
    drop(listener);
    addr
}

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

// === flush ===

#[test]
fn flush_url_makes_the_next_lookup_miss_and_spares_other_urls() {
    let (memcached, rt, ns) = (Memcached::start(), runtime(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    fill(&rt, &cache, "http://api.example.com/servers?page=2&sort=name", &[], "\"a\"");
    fill(&rt, &cache, "http://api.example.com/other", &[], "\"b\"");

    // Named as a client might type it: host case, default port and query order are the library's business.
    direct(&memcached.addr(), &ns)
        .args(["flush", "--url", "http://API.example.com:80/servers?sort=name&page=2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("url").and(predicate::str::contains(memcached.addr())))
        .stdout(predicate::str::contains("invalidated 1 of 1 targets (hard)"));

    assert_eq!(lookup(&rt, &cache, "http://api.example.com/servers?page=2&sort=name"), "miss");
    assert_eq!(lookup(&rt, &cache, "http://api.example.com/other"), "hit");
}

#[test]
fn flush_tag_invalidates_every_tagged_entry() {
    let (memcached, rt, ns) = (Memcached::start(), runtime(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    fill(&rt, &cache, "http://shop/a", &["products", "a"], "\"a\"");
    fill(&rt, &cache, "http://shop/b", &["products"], "\"b\"");
    fill(&rt, &cache, "http://shop/c", &["cart"], "\"c\"");

    let output = direct(&memcached.addr(), &ns).args(["--json", "flush", "--tag", "products"]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let report = stdout_json(&output);
    assert_eq!(report["complete"], true);
    assert_eq!(report["targets"][0]["kind"], "tag");
    assert_eq!(report["targets"][0]["name"], "products");
    assert_eq!(report["targets"][0]["ok"], true);

    assert_eq!(lookup(&rt, &cache, "http://shop/a"), "miss");
    assert_eq!(lookup(&rt, &cache, "http://shop/b"), "miss");
    assert_eq!(lookup(&rt, &cache, "http://shop/c"), "hit");
}

#[test]
fn flush_everything_empties_the_namespace_and_spares_other_namespaces() {
    let (memcached, rt, ns, other_ns) = (Memcached::start(), runtime(), unique_namespace(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    let other = self::cache(&rt, &memcached.addr(), &other_ns);
    fill(&rt, &cache, "http://shop/a", &[], "\"a\"");
    fill(&rt, &cache, "http://shop/b", &["t"], "\"b\"");
    fill(&rt, &other, "http://shop/a", &[], "\"other\"");

    direct(&memcached.addr(), &ns).args(["flush", "--all"]).assert().success().stdout(predicate::str::contains("all"));

    assert_eq!(lookup(&rt, &cache, "http://shop/a"), "miss");
    assert_eq!(lookup(&rt, &cache, "http://shop/b"), "miss");
    assert_eq!(lookup(&rt, &other, "http://shop/a"), "hit");
}

#[test]
fn flush_combines_urls_tags_and_grace_in_one_call() {
    let (memcached, rt, ns) = (Memcached::start(), runtime(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    fill(&rt, &cache, "http://shop/a", &[], "\"a\"");
    fill(&rt, &cache, "http://shop/b", &[], "\"b\"");
    fill(&rt, &cache, "http://shop/c", &["t"], "\"c\"");
    fill(&rt, &cache, "http://shop/d", &[], "\"d\"");

    let output = direct(&memcached.addr(), &ns)
        .args(["--json", "flush", "--url", "http://shop/a", "--url", "http://shop/b", "--tag", "t"])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let report = stdout_json(&output);
    let kinds: Vec<&str> =
        report["targets"].as_array().expect("targets").iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds, ["url", "url", "tag"]);
    for url in ["http://shop/a", "http://shop/b", "http://shop/c"] {
        assert_eq!(lookup(&rt, &cache, url), "miss", "{url}");
    }
    assert_eq!(lookup(&rt, &cache, "http://shop/d"), "hit");

    // Soft: the old entry stays servable, in grace, while one caller refreshes it.
    fill(&rt, &cache, "http://shop/e", &["soft"], "\"e\"");
    direct(&memcached.addr(), &ns)
        .args(["flush", "--tag", "soft", "--grace", "30s"])
        .assert()
        .success()
        .stdout(predicate::str::contains("soft").and(predicate::str::contains("30s")));
    let output =
        direct(&memcached.addr(), &ns).args(["--json", "inspect", "--url", "http://shop/e"]).output().expect("runs");
    assert_eq!(stdout_json(&output)["entry"]["state"], "grace");
}

#[test]
fn dry_run_prints_keys_and_servers_and_writes_nothing() {
    let (memcached, rt, ns) = (Memcached::start(), runtime(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    fill(&rt, &cache, "http://shop/a", &["t"], "\"a\"");
    let head_key = Namespace::new(&ns).expect("ns").head_key(&ResourceKey::from_url("http://shop/a").expect("url"));

    direct(&memcached.addr(), &ns)
        .args(["flush", "--url", "http://shop/a", "--tag", "t", "--all", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(head_key.as_str()))
        .stdout(predicate::str::contains(format!("etagd2:{ns}:g:all")))
        .stdout(predicate::str::contains(format!("etagd2:{ns}:g:t:")))
        .stdout(predicate::str::contains(memcached.addr()))
        .stdout(predicate::str::contains("nothing was written"));

    let output = direct(&memcached.addr(), &ns)
        .args(["--json", "flush", "--url", "http://shop/a", "--dry-run"])
        .output()
        .expect("runs");
    let plan = stdout_json(&output);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["writes"][0]["key"], head_key.as_str());
    assert_eq!(plan["writes"][0]["server"], memcached.addr().as_str());

    assert_eq!(lookup(&rt, &cache, "http://shop/a"), "hit");
}

// === inspect and stats ===

#[test]
fn inspect_shows_what_the_library_stored() {
    let (memcached, rt, ns) = (Memcached::start(), runtime(), unique_namespace());
    let cache = cache(&rt, &memcached.addr(), &ns);
    let etag = fill(&rt, &cache, "http://shop/item?id=7", &["products", "item-7"], "\"v7\"");
    assert_eq!(etag, "\"v7\"");

    direct(&memcached.addr(), &ns)
        .args(["inspect", "--url", "http://SHOP/item?id=7"])
        .assert()
        .success()
        .stdout(predicate::str::contains("etag       \"v7\""))
        .stdout(predicate::str::contains("status     200"))
        .stdout(predicate::str::contains("state      fresh"))
        .stdout(predicate::str::contains("products, item-7"))
        .stdout(predicate::str::contains("21 bytes"));

    let output = direct(&memcached.addr(), &ns)
        .args(["--json", "inspect", "--url", "http://shop/item?id=7"])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let inspection = stdout_json(&output);
    assert_eq!(inspection["head"], "entry");
    assert_eq!(inspection["entry"]["etag"], etag.as_str());
    assert_eq!(inspection["entry"]["tags"], json!(["products", "item-7"]));
    assert_eq!(inspection["server"], memcached.addr().as_str());

    direct(&memcached.addr(), &ns)
        .args(["inspect", "--url", "http://shop/never-stored"])
        .assert()
        .success()
        .stdout(predicate::str::contains("stored     nothing"));
}

#[test]
fn stats_shows_each_server_reachable_with_its_version() {
    let memcached = Memcached::start();
    let version = memcached.stats().get("version").cloned().expect("memcached reports its version");
    etagctl()
        .args(["--memcached", &memcached.addr(), "stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains(memcached.addr()).and(predicate::str::contains("yes")))
        .stdout(predicate::str::contains(version.as_str()));

    let output = etagctl().args(["stats", "--json"]).env("ETAGD_MEMCACHED", memcached.addr()).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let stats = stdout_json(&output);
    assert_eq!(stats["servers"][0]["reachable"], true);
    assert_eq!(stats["servers"][0]["version"], version.as_str());
}

// === failures ===

#[test]
fn malformed_urls_are_usage_errors() {
    for args in [
        vec!["flush", "--url", "not a url"],
        vec!["flush", "--url", "http://ok/", "--url", "ftp://h/x"],
        vec!["inspect", "--url", "/relative/path"],
    ] {
        etagctl()
            .args(["--memcached", &closed_port()])
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is invalid").and(predicate::str::contains("http://host/path")))
            .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    }
}

#[test]
fn flush_naming_nothing_is_a_usage_error() {
    etagctl()
        .args(["--memcached", &closed_port(), "flush"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pass --url URL, --tag TAG, --prefix URL or --all"))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
}

#[test]
fn naming_no_cache_is_a_usage_error() {
    etagctl()
        .args(["stats"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--memcached").and(predicate::str::contains("ETAGD_MEMCACHED")))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    etagctl().args(["--memcached", "no-port", "stats"]).assert().code(2).stderr(predicate::str::contains("host:port"));
    etagctl()
        .args(["--memcached", &closed_port(), "--namespace", "bad:ns", "stats"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("namespace"));
}

#[test]
fn unreachable_memcached_fails_fast_with_a_message() {
    let addr = closed_port();
    etagctl()
        .args(["--memcached", &addr, "flush", "--url", "http://shop/a"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(addr.as_str()).and(predicate::str::contains("no")))
        .stderr(predicate::str::contains("the invalidation is incomplete"))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    etagctl()
        .args(["--memcached", &addr, "stats"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(addr.as_str()))
        .stderr(predicate::str::contains("unreachable"));
    etagctl()
        .args(["--memcached", &addr, "inspect", "--url", "http://shop/a"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(addr.as_str()));
}

#[test]
fn a_memcached_that_never_answers_fails_instead_of_hanging() {
    let silent = SilentServer::start();
    for args in [
        vec!["flush", "--url", "http://shop/a"],
        vec!["flush", "--tag", "t", "--grace", "5s"],
        vec!["inspect", "--url", "http://shop/a"],
    ] {
        etagctl()
            .args(["--memcached", &silent.addr(), "--timeout", "500ms"])
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    }
    etagctl()
        .args(["--memcached", &silent.addr(), "--timeout", "500ms", "stats"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(silent.addr()).and(predicate::str::contains("no")))
        .stderr(predicate::str::contains("unreachable"));
}

/// Each server holds its own copy of the namespace counter, so a namespace bump on the live servers would not
/// cover a head on the dead one: whichever server held the counter by its own hash, the dead server is fenced
/// on the live one instead, the report is complete and names it, and nothing escalates (etagd's own guarantee).
#[test]
fn one_server_down_among_several_is_fenced_on_the_others() {
    let (memcached, rt) = (Memcached::start(), runtime());
    let down = closed_port();
    let servers = [memcached.addr(), down.clone()];
    let config = MemcachedConfig { servers: servers.to_vec(), ..MemcachedConfig::default() };
    let store = rt.block_on(MemcachedStore::connect(config)).expect("a memcached store");
    let counter_on = |ns: &str| store.server_of(&Namespace::new(ns).expect("ns").all_generation_key());
    let namespace_with_counter_on = |server: &str| {
        std::iter::repeat_with(unique_namespace).find(|ns| counter_on(ns) == server).expect("an endless supply")
    };
    let flush = |ns: &str| {
        let namespace = Namespace::new(ns).expect("ns");
        let on_down =
            |url: &String| store.server_of(&namespace.head_key(&ResourceKey::from_url(url).expect("url"))) == down;
        let url = (0..).map(|i| format!("http://shop/{i}")).find(on_down).expect("some url lands on each server");
        etagctl()
            .args(["--memcached", &servers.join(","), "--namespace", ns, "--json", "flush", "--url", &url])
            .output()
            .expect("runs")
    };

    for server in [memcached.addr(), down.clone()] {
        let output = flush(&namespace_with_counter_on(&server));
        let report = stdout_json(&output);
        assert_eq!(report["complete"], true, "{report}");
        assert_eq!(report["fenced"], json!([down]), "{report}");
        assert_eq!(report["escalated_to_all"], false, "{report}");
        assert_eq!(output.status.code(), Some(0));
    }
}

// === admin mode ===

/// What the imitation admin API saw.
#[derive(Debug, Default)]
struct Seen {
    bodies: Vec<Value>,
    entry_urls: Vec<String>,
    authorizations: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Seen>>;

const TOKEN: &str = "s3cret";

fn authorized(seen: &Shared, headers: &AxumHeaders) -> bool {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ok = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
    seen.lock().expect("not poisoned").authorizations.push(auth);
    ok
}

fn refused() -> (StatusCode, Json<Value>) {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": "missing or wrong bearer token"})))
}

/// An admin API on 127.0.0.1:0 that checks the bearer token and answers canned bodies.
fn admin_api(rt: &Runtime) -> (String, Shared) {
    let seen = Shared::default();
    let app = axum::Router::new()
        .route(
            "/invalidate",
            post(|State(seen): State<Shared>, headers: AxumHeaders, Json(body): Json<Value>| async move {
                if !authorized(&seen, &headers) {
                    return refused();
                }
                if body["urls"].as_array().is_some_and(|urls| urls.iter().any(|u| u == "http://bad/")) {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": "url http://bad/ is not allowed"})));
                }
                if body["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "down")) {
                    // The sidecar answers 207 when a write failed and nothing covered it.
                    let failed = json!({"kind": "tag", "name": "down", "server": "10.0.0.6:11211", "ok": false,
                                        "existed": null, "error": "memcached 10.0.0.6:11211 did not answer"});
                    let report = json!({"targets": [failed], "grace_s": null, "escalated_to_all": false, "complete": false});
                    return (StatusCode::MULTI_STATUS, Json(report));
                }
                seen.lock().expect("not poisoned").bodies.push(body.clone());
                let mut targets: Vec<Value> = body["urls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|u| json!({"kind": "url", "name": u, "server": "10.0.0.5:11211", "ok": true, "existed": true, "error": null}))
                    .collect();
                targets.extend(body["tags"].as_array().into_iter().flatten().map(
                    |t| json!({"kind": "tag", "name": t, "server": "10.0.0.6:11211", "ok": true, "existed": null, "error": null}),
                ));
                (StatusCode::OK, Json(json!({"targets": targets, "grace_s": body["grace_s"], "escalated_to_all": false, "complete": true})))
            }),
        )
        .route(
            "/entries",
            get(|State(seen): State<Shared>, headers: AxumHeaders, Query(query): Query<std::collections::HashMap<String, String>>| async move {
                if !authorized(&seen, &headers) {
                    return refused();
                }
                seen.lock().expect("not poisoned").entry_urls.push(query.get("url").cloned().unwrap_or_default());
                (StatusCode::OK, Json(json!({
                    "canonical": "GET\nhttp\nshop\n/a\nx=1&y=2", "head_key": "etagd2:default:u:00", "server": "10.0.0.5:11211",
                    "head": "variants", "vary": ["accept-encoding"], "pass_reason": null,
                    "entry": {"etag": "\"from-sidecar\"", "status": 200, "state": "stale", "age_s": 90, "ttl_left_s": 0,
                              "body_bytes": 10, "tags": [], "codings": ["gzip"], "stored_at_ms": 1},
                })))
            }),
        )
        .route(
            "/stats",
            get(|State(seen): State<Shared>, headers: AxumHeaders| async move {
                if !authorized(&seen, &headers) {
                    return refused();
                }
                (StatusCode::OK, Json(json!({
                    "servers": [{"server": "10.0.0.5:11211", "reachable": true, "error": null, "version": "1.6.99",
                                 "items": 1, "bytes": 10, "limit_bytes": 100, "get_hits": 1, "get_misses": 1,
                                 "cmd_get": 2, "evictions": 0}],
                    "health": [{"server": "10.0.0.5:11211", "up": true, "last_error": null}],
                })))
            }),
        )
        .with_state(seen.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the admin API");
    let addr = listener.local_addr().expect("an address");
    rt.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[test]
fn admin_flush_sends_the_invalidation_with_the_token() {
    let rt = runtime();
    let (admin, seen) = admin_api(&rt);
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN])
        .args(["flush", "--url", "http://shop/a", "--tag", "products", "--grace", "30s"])
        .assert()
        .success()
        .stdout(predicate::str::contains("10.0.0.5:11211").and(predicate::str::contains("products")))
        .stdout(predicate::str::contains("soft"));
    // The token can come from the environment too.
    etagctl().args(["flush", "--all"]).env("ETAGCTL_ADMIN", &admin).env("ETAGD_ADMIN_TOKEN", TOKEN).assert().success();
    let seen = seen.lock().expect("not poisoned");
    assert_eq!(
        seen.bodies,
        [
            json!({"urls": ["http://shop/a"], "tags": ["products"], "all": false, "grace_s": 30}),
            json!({"urls": [], "tags": [], "all": true, "grace_s": null}),
        ]
    );
    assert_eq!(seen.authorizations, [Some(format!("Bearer {TOKEN}")), Some(format!("Bearer {TOKEN}"))]);
}

#[test]
fn admin_refusing_the_token_exits_1_with_what_to_do() {
    let rt = runtime();
    let (admin, seen) = admin_api(&rt);
    for token in [None, Some("wrong")] {
        let mut command = etagctl();
        command.args(["--admin", &admin]);
        if let Some(token) = token {
            command.args(["--admin-token", token]);
        }
        command
            .args(["flush", "--tag", "t"])
            .assert()
            .code(1)
            .stderr("error: the admin API refused the token: pass --admin-token or set ETAGD_ADMIN_TOKEN\n");
    }
    assert_eq!(seen.lock().expect("not poisoned").authorizations, [None, Some("Bearer wrong".to_owned())]);
    assert!(seen.lock().expect("not poisoned").bodies.is_empty());
}

#[test]
fn admin_inspect_and_stats_render_the_sidecars_answers() {
    let rt = runtime();
    let (admin, seen) = admin_api(&rt);
    let url = "http://shop/a?y=2&x=1";
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "inspect", "--url", url])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"from-sidecar\""))
        .stdout(predicate::str::contains("accept-encoding"))
        .stdout(predicate::str::contains("GET http://shop/a?x=1&y=2"));
    assert_eq!(seen.lock().expect("not poisoned").entry_urls, [url]);

    let output = etagctl().args(["--admin", &admin, "--admin-token", TOKEN, "--json", "stats"]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_json(&output)["health"][0]["up"], true);
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1.6.99").and(predicate::str::contains("as the sidecar sees them")));
}

#[test]
fn admin_errors_map_to_exit_codes() {
    let rt = runtime();
    let (admin, seen) = admin_api(&rt);
    // 400 from the sidecar: the input was wrong.
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "flush", "--url", "http://bad/"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("url http://bad/ is not allowed"));
    // A partial invalidation is reported and fails.
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "flush", "--tag", "down"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("10.0.0.6:11211").and(predicate::str::contains("did not answer")))
        .stderr(predicate::str::contains("the invalidation is incomplete"));
    // Nothing listening.
    etagctl()
        .args(["--admin", &format!("http://{}", closed_port()), "stats"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unreachable").and(predicate::str::contains("--admin")))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    // A dry run sends nothing.
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "flush", "--tag", "t", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("/invalidate").and(predicate::str::contains("nothing was sent")));
    assert!(seen.lock().expect("not poisoned").bodies.is_empty());
    // Both targets typed on the command line is ambiguous; one from the environment yields to the typed one.
    etagctl().args(["--admin", &admin, "--memcached", "127.0.0.1:1", "stats"]).assert().code(2);
    etagctl()
        .args(["--admin", &admin, "--admin-token", TOKEN, "stats"])
        .env("ETAGD_MEMCACHED", "127.0.0.1:1")
        .assert()
        .success();
}

// === help and completions ===

#[test]
fn every_command_shows_an_example_and_completions_print() {
    for command in [
        vec!["--help"],
        vec!["flush", "--help"],
        vec!["inspect", "--help"],
        vec!["stats", "--help"],
        vec!["completions", "--help"],
    ] {
        etagctl().args(&command).assert().success().stdout(predicate::str::contains("Examples:"));
    }
    for (shell, marker) in [("bash", "complete"), ("zsh", "#compdef etagctl"), ("fish", "complete -c etagctl")] {
        etagctl().args(["completions", shell]).assert().success().stdout(predicate::str::contains(marker));
    }
}
