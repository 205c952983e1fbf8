//! Streaming fills (issue 16): a body larger than one Memcached item reaches the client that fills it as the
//! origin sends it, while etagd stores it; a client that goes away mid-fill does not stop the fill; waiters on
//! another replica keep waiting for a fill whose body is arriving, past `--fill-wait`, and stop waiting once
//! it stalls. The origin here stalls halfway on a gate the test opens, so nothing depends on timing except
//! the waits that put a waiter past its `--fill-wait`. A miss within one item is answered as soon as its body
//! is read, before its codings and commit.

use std::sync::Arc;
use std::time::Duration;

use etagd_testkit::Memcached;
use tokio::sync::Semaphore;

use crate::storage_rules::big_body;
use crate::support::{self, Fleet, Origin, Replica, Route, guard, shutdown_all};

const MIB: usize = 1024 * 1024;
/// Where the origin stalls: well inside the first chunk.
const STALL_AT: usize = 256 * 1024;

/// A 3 MiB answer that stalls after [`STALL_AT`] bytes until `gate` gets a permit.
fn stalling(body: &bytes::Bytes, gate: &Arc<Semaphore>) -> Route {
    let body = body.clone();
    Route::cacheable()
        .header("content-type", "application/octet-stream")
        .stall_after(STALL_AT, gate.clone())
        .body(move |_| body.clone())
}

/// Starts a GET through `replica` and reads until at least `bytes` of the body arrived (bounded by the
/// client's timeout); returns the response to read on and what was read.
async fn read_first(replica: &Replica, path: &str, bytes: usize) -> (reqwest::Response, Vec<u8>) {
    let client = support::http_client();
    let mut response = client
        .get(format!("{}{path}", replica.proxy_url()))
        .header("host", support::HOST)
        .send()
        .await
        .expect("the head arrives while the origin is still sending");
    let mut read = Vec::new();
    while read.len() < bytes {
        let chunk = response.chunk().await.expect("the body streams").expect("the body goes on");
        read.extend_from_slice(&chunk);
    }
    (response, read)
}

/// The filling client gets the head and the first bytes while the origin has not sent the rest (a buffered
/// fill would answer only after the last byte), then every byte; the entry is stored under the validator that
/// client got, and another replica serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filling_client_gets_the_first_bytes_while_the_origin_is_still_sending() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let gate = Arc::new(Semaphore::new(0));
        let body = big_body(3 * MIB);
        origin.route("/export", stalling(&body, &gate));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let (mut response, mut read) = read_first(&a, "/export", STALL_AT).await;
        assert_eq!(read[..], body[..read.len()], "the first bytes, while the origin stalls");
        let status = response.headers()["cache-status"].to_str().expect("text").to_owned();
        // RFC 9211 section 2.6: the cache decided to store it before the head went out.
        assert!(status.contains("streamed-fill") && status.contains("; stored"), "{status}");
        let etag = response.headers()["etag"].to_str().expect("text").to_owned();
        assert_eq!(response.headers()["content-length"], body.len().to_string().as_str());
        gate.add_permits(1);
        while let Some(chunk) = response.chunk().await.expect("the rest streams") {
            read.extend_from_slice(&chunk);
        }
        assert!(read == body, "every byte, in order");

        let hit = b.get_ok("/export").await;
        assert!(hit.is_fresh_hit() && hit.body == body, "{}", hit.cache_status());
        assert_eq!(hit.etag(), etag, "the validator the filling client got");
        assert_eq!(origin.count("/export"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}

/// A body of unknown length (chunked, RFC 9112 section 7.1) may be larger than one item, so it streams from its
/// first byte too: the filling client gets the first bytes while the origin stalls, well before one item's
/// worth has arrived (waiting to see whether it fits one item would hold them back), and the entry is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_streams_from_its_first_byte() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let gate = Arc::new(Semaphore::new(0));
        let body = big_body(3 * MIB);
        origin.route("/export", stalling(&body, &gate).chunked());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let (mut response, mut read) = read_first(&a, "/export", STALL_AT).await;
        assert_eq!(read[..], body[..read.len()], "the first bytes, while the origin stalls");
        assert!(response.headers().get("content-length").is_none(), "the length was not announced");
        let status = response.headers()["cache-status"].to_str().expect("text").to_owned();
        assert!(status.contains("streamed-fill") && status.contains("; stored"), "{status}");
        gate.add_permits(1);
        while let Some(chunk) = response.chunk().await.expect("the rest streams") {
            read.extend_from_slice(&chunk);
        }
        assert!(read == body, "every byte, in order");
        let hit = b.get_ok("/export").await;
        assert!(hit.is_fresh_hit() && hit.body == body, "{}", hit.cache_status());
        assert_eq!(origin.count("/export"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}

/// A client that disconnects mid-fill does not abort the fill: the rest of the body is read and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_fill_does_not_abort_it() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let gate = Arc::new(Semaphore::new(0));
        let body = big_body(3 * MIB);
        origin.route("/export", stalling(&body, &gate));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let (response, _) = read_first(&a, "/export", STALL_AT).await;
        drop(response);
        gate.add_permits(1);
        // `b` waits for the fill in flight (its lease is held until the commit), then hits.
        let hit = b.get_ok("/export").await;
        assert!(hit.is_fresh_hit() && hit.body == body, "{}", hit.cache_status());
        assert_eq!(origin.count("/export"), 1, "the abandoned client's fill was stored");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// A waiter on another replica keeps waiting past its `--fill-wait` while the fill it waits for streams (its
/// progress marker lives one lease past the last byte), and goes to the origin once the fill has stalled for
/// longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_follow_a_streaming_fill_past_fill_wait_until_it_stalls() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let (gate, stuck) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let body = big_body(3 * MIB);
        origin.route("/export", stalling(&body, &gate));
        origin.route("/stuck", stalling(&body, &stuck));
        let fleet = Fleet::new(&origin, &[&memcached]);
        // A lease of 2 s: memcached counts TTLs in whole seconds, so 1 s could lapse between two renewals.
        let filler = fleet.replica(&["--fill-lease", "2s"]).await;
        let waiter = Arc::new(fleet.replica(&["--fill-wait", "200ms"]).await);

        // The fill has just streamed its first bytes: its marker is fresh, so the waiter outwaits fill-wait.
        let (mut response, _) = read_first(&filler, "/export", STALL_AT).await;
        let waiting = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.get_ok("/export").await }
        });
        tokio::time::sleep(Duration::from_millis(600)).await; // three fill-waits, within one lease
        gate.add_permits(1);
        while response.chunk().await.expect("the rest streams").is_some() {}
        let waited = waiting.await.expect("the waiter answers");
        assert!(waited.is_fresh_hit() && waited.body == body, "{}", waited.cache_status());
        assert_eq!(origin.count("/export"), 1, "the waiter did not go to the origin");

        // A fill stalled for longer than a lease has lost its marker: waiters give up on it, as before.
        let (_stalled, _) = read_first(&filler, "/stuck", STALL_AT).await;
        let giving_up = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.get_ok("/stuck").await }
        });
        assert_eq!(origin.wait_count("/stuck", 2).await, 2, "the waiter went to the origin itself");
        stuck.add_permits(2);
        let gave_up = giving_up.await.expect("the waiter answers");
        assert!(gave_up.cache_status().contains("fill-wait-timeout"), "{}", gave_up.cache_status());
        assert!(gave_up.body == body);
        shutdown_all([filler]).await;
        if let Ok(waiter) = Arc::try_unwrap(waiter) {
            waiter.shutdown().await;
        }
    })
    .await;
}

/// The stored codings of a streamed fill are produced after its client was answered (identity, as it came),
/// and then serve other clients: one compression per fill, each coding under its own validator (RFC 9110
/// section 8.8.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_fill_stores_its_codings_off_the_request_path() {
    guard(async {
        use std::io::Read;

        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let json: String = (0..120_000).map(|n| format!("{{\"id\":{n},\"name\":\"server-{n}\"}},")).collect();
        let body = bytes::Bytes::from(format!("[{}]", json.trim_end_matches(',')));
        assert!(body.len() > 2 * MIB);
        let served = body.clone();
        origin.route(
            "/servers",
            Route::cacheable().header("content-type", "application/json").body(move |_| served.clone()),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let first = a.get("/servers", &[("accept-encoding", "gzip")]).await;
        assert!(first.cache_status().contains("streamed-fill"), "{}", first.cache_status());
        assert_eq!(first.header("content-encoding"), "", "the filling client gets identity, as it came");
        assert!(first.body == body);
        assert!(first.header("vary").to_ascii_lowercase().contains("accept-encoding"));

        let gzip = b.get("/servers", &[("accept-encoding", "gzip")]).await;
        assert!(gzip.is_fresh_hit(), "{}", gzip.cache_status());
        assert_eq!(gzip.header("content-encoding"), "gzip");
        assert_eq!(gzip.etag(), format!("{}-gzip\"", first.etag().trim_end_matches('"')));
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip.body[..]).read_to_end(&mut decoded).expect("valid gzip");
        assert!(decoded == body, "the stored coding decodes to the body");
        assert!(gzip.body.len() < body.len() / 4, "compressed: {} bytes", gzip.body.len());
        assert_eq!(origin.count("/servers"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}

/// A miss within one item (issue 18) is answered identity as it came, without waiting for its codings, and
/// says `stored` (the fill was admitted); the request right after it, on either replica, waits for that
/// fill's commit instead of filling again and gets the coding it asks for, produced once under the fill's
/// validator with the coding's suffix (RFC 9110 section 8.8.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_miss_is_answered_before_its_codings_and_the_next_request_gets_them() {
    guard(async {
        use std::io::Read;

        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let json: String = (0..400).map(|n| format!("{{\"id\":{n},\"name\":\"server-{n}\"}},")).collect();
        let body = bytes::Bytes::from(format!("[{}]", json.trim_end_matches(',')));
        let served = body.clone();
        origin.route(
            "/servers",
            Route::cacheable().header("content-type", "application/json").body(move |_| served.clone()),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let first = a.get("/servers", &[("accept-encoding", "gzip")]).await;
        let status = first.cache_status();
        assert!(status.contains("fwd=uri-miss") && status.contains("; stored"), "{status}");
        assert_eq!(first.header("content-encoding"), "", "the filling client gets identity, as it came");
        assert!(first.body == body);
        assert!(first.header("vary").to_ascii_lowercase().contains("accept-encoding"));

        for replica in [&a, &b] {
            let gzip = replica.get("/servers", &[("accept-encoding", "gzip")]).await;
            assert!(gzip.is_fresh_hit(), "{}", gzip.cache_status());
            assert_eq!(gzip.header("content-encoding"), "gzip");
            assert_eq!(gzip.etag(), format!("{}-gzip\"", first.etag().trim_end_matches('"')));
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gzip.body[..]).read_to_end(&mut decoded).expect("valid gzip");
            assert!(decoded == body, "the stored coding decodes to the body");
        }
        assert_eq!(origin.count("/servers"), 1, "one fill");
        shutdown_all([a, b]).await;
    })
    .await;
}
