//! Connection hygiene (issue 14): what one client or a stalled origin may hold of a sidecar is bounded by a
//! flag. Slow request heads are cut, oversized ones refused with 431, requests over `--max-in-flight` answered
//! 503, and an origin body that stalls mid-stream is cut while later requests still work.
//!
//! Each test starts etagd in process on loopback with short limits, and talks to it over real sockets: raw
//! `TcpStream`s where a well-behaved HTTP client could not misbehave the way the test needs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};

use crate::support::{HOST, Origin, Route, guard, http_client, send};

/// The bound on every wait in this module: far above each limit the tests set, so only a limit that does not
/// work at all fails them.
const BOUND: Duration = Duration::from_secs(10);

/// Starts one sidecar on the embedded store in front of `upstream`, with these extra flags.
async fn sidecar(upstream: &str, extra: &[&str]) -> etagd::Running {
    let mut args = vec!["etagd", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", upstream];
    args.extend_from_slice(&["--drain-timeout", "1s"]);
    args.extend_from_slice(extra);
    let config = etagd::config::Config::try_parse_from(args).expect("valid etagd flags");
    etagd::start(config).await.expect("etagd starts")
}

/// Reads from `stream` until the peer closes it (EOF or reset), or `BOUND` passes; returns what was read and
/// whether it was closed.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (seen, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    guard(async {
        let origin = Origin::start().await;
        let etagd = sidecar(&origin.url, &["--header-read-timeout", "300ms"]).await;

        // A head that stops mid-line and then sends nothing more.
        let mut stalled = TcpStream::connect(etagd.proxy_addr).await.expect("connect to the proxy");
        stalled.write_all(format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: a").as_bytes()).await.unwrap();
        let (answer, closed) = read_until_closed(&mut stalled).await;
        assert!(closed, "a connection with a half-sent head stays open past {BOUND:?} with a 300ms timeout");
        assert!(!String::from_utf8_lossy(&answer).contains(" 200 "), "an unfinished request was never answered");

        // A head trickled one header line at a time, each well within the timeout: the timeout bounds the whole
        // head, not the gap between bytes.
        let mut trickle = TcpStream::connect(etagd.proxy_addr).await.expect("connect to the proxy");
        trickle.write_all(format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes()).await.unwrap();
        let deadline = Instant::now() + BOUND;
        let mut closed = false;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            if trickle.write_all(b"X-Trickle: a\r\n").await.is_err() {
                closed = true;
                break;
            }
            match timeout(Duration::from_millis(50), trickle.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "a connection trickling header lines stays open past {BOUND:?} with a 300ms timeout");
        assert_eq!(origin.count("/slow"), 0, "no part of an unfinished request reached the origin");

        // hyper runs the same clock while a keep-alive connection waits for its next request, so the flag is
        // also the idle limit (why its default sits above the 60 s idle timeout of the usual proxies in front).
        let mut idle = TcpStream::connect(etagd.proxy_addr).await.expect("connect to the proxy");
        idle.write_all(format!("GET /idle HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
        let (answer, closed) = read_until_closed(&mut idle).await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
        assert!(closed, "an idle keep-alive connection stays open past {BOUND:?} with a 300ms timeout");

        // Well-formed requests on fresh connections are unaffected.
        let reply = send(&http_client(), "GET", &format!("http://{}/fine", etagd.proxy_addr), &[], None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        etagd.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_limit_is_refused_with_431() {
    guard(async {
        let origin = Origin::start().await;
        let etagd = sidecar(&origin.url, &["--max-header-bytes", "4096"]).await;
        let client = http_client();
        let url = format!("http://{}/big", etagd.proxy_addr);

        let small = "s".repeat(1000);
        let reply = send(&client, "GET", &url, &[("host", HOST), ("x-pad", &small)], None).await;
        assert_eq!(reply.status, 200, "a head within the limit is served: {}", reply.text());

        // RFC 6585 section 5: 431 Request Header Fields Too Large "indicates that the server is unwilling to
        // process the request because its header fields are too large".
        let big = "b".repeat(8000);
        let reply = send(&client, "GET", &url, &[("host", HOST), ("x-pad", &big)], None).await;
        assert_eq!(reply.status, 431, "a head over --max-header-bytes: {:?}", reply.headers);
        // Many fields that are each small but add up over the limit are the same case.
        let many: Vec<(String, String)> = (0..40).map(|i| (format!("x-pad-{i}"), "m".repeat(150))).collect();
        let mut headers: Vec<(&str, &str)> = vec![("host", HOST)];
        headers.extend(many.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        assert_eq!(send(&client, "GET", &url, &headers, None).await.status, 431, "fields adding up over the limit");
        assert_eq!(origin.count("/big"), 1, "only the request within the limit reached the origin");

        let reply = send(&client, "GET", &url, &[("host", HOST)], None).await;
        assert_eq!(reply.status, 200, "the sidecar serves the next request: {}", reply.text());
        etagd.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_cap_are_answered_503_with_retry_after() {
    guard(async {
        let origin = Origin::start().await;
        let gate = Arc::new(Semaphore::new(0));
        for path in ["/held/1", "/held/2"] {
            origin.route(path, Route::new().gate(gate.clone()));
        }
        let etagd = sidecar(&origin.url, &["--max-in-flight", "2"]).await;
        let proxy = format!("http://{}", etagd.proxy_addr);
        let client = http_client();

        // Two requests held by the origin fill the cap.
        let held: Vec<_> = ["/held/1", "/held/2"]
            .into_iter()
            .map(|path| {
                let (client, url) = (client.clone(), format!("{proxy}{path}"));
                tokio::spawn(async move { send(&client, "GET", &url, &[("host", HOST)], None).await })
            })
            .collect();
        assert_eq!(origin.wait_count("/held/1", 1).await, 1, "the first held request reached the origin");
        assert_eq!(origin.wait_count("/held/2", 1).await, 1, "the second held request reached the origin");

        // RFC 9110 section 15.6.4: 503 means the server "is currently unable to handle the request due to a
        // temporary overload", and "the server MAY send a Retry-After header field" saying how long to wait.
        let refused = send(&client, "GET", &format!("{proxy}/third"), &[("host", HOST)], None).await;
        assert_eq!(refused.status, 503, "{}", refused.text());
        let retry_after: u64 = refused.header("retry-after").parse().expect("Retry-After in delay-seconds");
        assert!(retry_after >= 1, "Retry-After asks for a wait: {retry_after}");
        assert!(refused.cache_status().starts_with("etagd"), "{:?}", refused.headers);
        assert!(refused.cache_status().contains("detail=overloaded"), "{}", refused.cache_status());
        assert!(refused.text().contains("--max-in-flight"), "the body says what to do: {}", refused.text());
        assert_eq!(origin.count("/third"), 0, "a refused request never reaches the origin");
        let metrics = send(&client, "GET", &format!("http://{}/metrics", etagd.admin_addr), &[], None).await;
        assert!(metrics.text().contains("etagd_overload_refused_total 1"), "{}", metrics.text());

        gate.add_permits(2);
        for request in held {
            let reply = request.await.expect("the held request's task");
            assert_eq!(reply.status, 200, "held requests finish once the origin answers: {}", reply.text());
        }
        // Finished requests give their places back (a place is freed once its response is sent).
        let deadline = Instant::now() + BOUND;
        loop {
            let reply = send(&client, "GET", &format!("{proxy}/after"), &[("host", HOST)], None).await;
            if reply.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "places never came back: {} {}", reply.status, reply.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        etagd.shutdown().await;
    })
    .await;
}

/// An origin whose `/stall` and `/stall-pass` bodies send one chunk and then nothing, with the connection
/// kept open, and whose `/ok` answers at once. Returns its URL.
async fn stalling_origin() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let stalls = Arc::new(AtomicUsize::new(0));
    let stalled = |cache_control: &'static str, stalls: Arc<AtomicUsize>| {
        move || {
            stalls.fetch_add(1, Ordering::SeqCst);
            async move {
                let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"first part;"))]);
                let body = AxumBody::from_stream(first.chain(futures_util::stream::pending()));
                Response::builder().header("cache-control", cache_control).body(body).expect("a valid response")
            }
        }
    };
    let app = Router::new()
        .route("/stall", get(stalled("max-age=60", stalls.clone())))
        .route("/stall-pass", get(stalled("no-store", stalls.clone())))
        .route("/ok", get(|| async { ([("cache-control", "max-age=60")], "ok") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the origin on loopback");
    let url = format!("http://{}", listener.local_addr().expect("a bound listener has an address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, stalls)
}

/// Sends a GET and reads the whole response; `Err` when the response or its body failed. Panics when it does
/// not end within `BOUND`.
async fn get_to_the_end(client: &reqwest::Client, url: &str) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let response = client.get(url).header("host", HOST).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    };
    timeout(BOUND, exchange).await.unwrap_or_else(|_| panic!("GET {url} did not end within {BOUND:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_body_that_stalls_is_cut_and_later_requests_still_work() {
    guard(async {
        let (upstream, stalls) = stalling_origin().await;
        let etagd = sidecar(&upstream, &["--origin-body-timeout", "300ms"]).await;
        let proxy = format!("http://{}", etagd.proxy_addr);
        let client = http_client();

        // Cacheable: the fill reads the body to store it. Not storable: the body streams through. Either way the
        // stall ends the response instead of holding the client, the fill and the origin connection for ever.
        for path in ["/stall", "/stall-pass", "/stall"] {
            let outcome = get_to_the_end(&client, &format!("{proxy}{path}")).await;
            match &outcome {
                Err(_) => {}
                Ok((status, _)) => assert!(*status >= 500, "GET {path}: a stalled body is not a success: {outcome:?}"),
            }
        }
        assert_eq!(stalls.load(std::sync::atomic::Ordering::SeqCst), 3, "every stalled GET reached the origin");
        let metrics = send(&client, "GET", &format!("http://{}/metrics", etagd.admin_addr), &[], None).await;
        assert!(metrics.text().contains("etagd_origin_body_timeouts_total 3"), "{}", metrics.text());

        // The sidecar and its origin pool still work: fresh answers, then a hit.
        for _ in 0..2 {
            let reply = send(&client, "GET", &format!("{proxy}/ok"), &[("host", HOST)], None).await;
            assert_eq!((reply.status, reply.text().as_str()), (200, "ok"), "{:?}", reply.headers);
        }
        etagd.shutdown().await;
    })
    .await;
}
