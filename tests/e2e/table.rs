//! The one table runner. The parity suite and every conformance module are tables of [`Case`]s: the origin's
//! routes and a list of [`Step`]s (a request and what must come back, or a change at the origin). [`run`] plays
//! each case through the sidecar and, unless the case says why it cannot, through the tower layer: each front
//! against its own origin with the case's routes, in its own namespace of one real memcached. The same
//! expectations hold for both fronts, so a passing case also proves they agree.
//!
//! Every failing case is reported, not just the first, so one run shows everything a change broke. There is no
//! sleep step: a case needing a stale entry gets one from the origin (`Age` past `max-age`, `max-age=0`,
//! `Expires` in the past), and one waiting for a background refresh polls the front's cache ([`Step::Settle`]).

mod fronts;
mod raw_origin;

use std::sync::Arc;
use std::time::Duration;

use etagd_client::layer::EtagCacheLayer;
use etagd_testkit::Memcached;

use crate::support::Reply;
use fronts::{Front, Upstream};

/// How long one case may take on one front before it fails instead of hanging the run.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// One case: what the origin serves and what happens, in order.
#[derive(Clone, Copy)]
pub(crate) struct Case {
    /// What the case checks, starting with the RFC section it was written from.
    pub(crate) name: &'static str,
    /// The origin's routes (any other path answers 200 with no headers).
    pub(crate) routes: &'static [Serve],
    /// What happens, in order.
    pub(crate) steps: &'static [Step],
    /// The sidecar's TOML file for this case ("": the defaults).
    pub(crate) sidecar_toml: &'static str,
    /// How the layer runs the case, or why it cannot.
    pub(crate) layer: Layer,
    /// The origin speaks raw HTTP/1.1 from a script (for interim responses and answers without `Date`, which
    /// the axum origin cannot send).
    pub(crate) raw_origin: bool,
}

/// A case with the default settings on both fronts.
pub(crate) const fn case(name: &'static str, routes: &'static [Serve], steps: &'static [Step]) -> Case {
    Case { name, routes, steps, sidecar_toml: "", layer: Layer::Same, raw_origin: false }
}

impl Case {
    /// Runs the sidecar with this TOML file.
    pub(crate) const fn sidecar_toml(mut self, toml: &'static str) -> Self {
        self.sidecar_toml = toml;
        self
    }

    /// Builds the layer with `with` applied to the default one (the sidecar's equivalent setting comes from
    /// [`Case::sidecar_toml`]).
    pub(crate) const fn layer_with(mut self, with: fn(EtagCacheLayer) -> EtagCacheLayer) -> Self {
        self.layer = Layer::With(with);
        self
    }

    /// Runs on the sidecar only, for the reason given.
    pub(crate) const fn sidecar_only(mut self, why: &'static str) -> Self {
        self.layer = Layer::Skip(why);
        self
    }

    /// Uses the raw HTTP/1.1 origin (sidecar only: the layer's service is Rust code, not an HTTP origin).
    pub(crate) const fn raw_origin(mut self) -> Self {
        self.raw_origin = true;
        self.layer = Layer::Skip("the scripted raw HTTP/1.1 origin is reached over HTTP, as only the sidecar does");
        self
    }
}

/// How the layer runs a case.
#[derive(Clone, Copy)]
pub(crate) enum Layer {
    /// With the defaults that match the sidecar's.
    Same,
    /// With a builder change standing for the sidecar's TOML setting.
    With(fn(EtagCacheLayer) -> EtagCacheLayer),
    /// Not at all: the case needs something only the sidecar has.
    Skip(&'static str),
}

/// One origin route. The origin validates: an `If-None-Match` naming the route's `ETag` gets a 304 with the
/// route's headers (RFC 9110 section 13.1.2).
#[derive(Clone, Copy)]
pub(crate) struct Serve {
    /// Path and query.
    pub(crate) path: &'static str,
    /// The status of a full answer.
    pub(crate) status: u16,
    /// Response header lines, in order (a name may repeat).
    pub(crate) headers: &'static [(&'static str, &'static str)],
    /// The body; `None`: `<path> v<version>`.
    pub(crate) body: Option<&'static str>,
    /// Interim (1xx) responses sent before the final one (raw origin only).
    pub(crate) interim: &'static [u16],
    /// The body is `<path> <this request header's value, or "none">` (a body that depends on a varied header).
    pub(crate) echo: Option<&'static str>,
}

/// A 200 route with these headers.
pub(crate) const fn serve(path: &'static str, headers: &'static [(&'static str, &'static str)]) -> Serve {
    Serve { path, status: 200, headers, body: None, interim: &[], echo: None }
}

impl Serve {
    /// Answers with this status.
    pub(crate) const fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Answers with this body.
    pub(crate) const fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends these 1xx responses first.
    pub(crate) const fn interim(mut self, codes: &'static [u16]) -> Self {
        self.interim = codes;
        self
    }

    /// Answers with a body naming this request header's value.
    pub(crate) const fn echo(mut self, header: &'static str) -> Self {
        self.echo = Some(header);
        self
    }
}

/// What a header (or body) must be.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Is {
    /// Exactly this text (header values compared case-sensitively; several lines joined with ", ").
    Eq(&'static str),
    /// Absent.
    Absent,
    /// Absent, or exactly this text.
    AbsentOr(&'static str),
    /// Present, any value.
    Present,
    /// Contains this text.
    Contains(&'static str),
    /// Does not contain this text (absent counts).
    Lacks(&'static str),
    /// A number at least this big.
    AtLeast(u64),
    /// The same as in the previous request's answer (which must have had it).
    AsBefore,
    /// Different from the previous request's answer.
    Changed,
}

/// A request and what must come back.
#[derive(Clone, Copy)]
pub(crate) struct Ask {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) headers: &'static [(&'static str, &'static str)],
    pub(crate) status: u16,
    /// The `Cache-Status` shape: parameters in order, `name=*` matching any value; `None`: not checked.
    pub(crate) cache_status: Option<&'static str>,
    pub(crate) expect_headers: &'static [(&'static str, Is)],
    /// The body (`Is::Eq("")` for none); `None`: not checked.
    pub(crate) body: Option<Is>,
    /// Requests this step sends to the origin for its path; `None`: not checked.
    pub(crate) origin_calls: Option<usize>,
    /// Headers the origin's last request for the path carried.
    pub(crate) origin_saw: &'static [(&'static str, Is)],
}

/// One thing that happens in a case.
#[derive(Clone, Copy)]
pub(crate) enum Step {
    /// A request through the front.
    Send(Ask),
    /// The origin answers this route's path like this from now on.
    Reroute(Serve),
    /// The origin answers every request 500 (`true`) or recovers (`false`).
    Fail(bool),
    /// The origin stops listening, as if the app went away.
    Stop,
    /// Waits (bounded) until the front's cache holds a fresh entry for the path: a background refresh done.
    Settle(&'static str),
    /// The origin has received exactly this many requests for the path since the case began.
    Total(&'static str, usize),
}

/// A request with this method; expects a 200 by default.
pub(crate) const fn send(method: &'static str, path: &'static str) -> Step {
    Step::Send(Ask {
        method,
        path,
        headers: &[],
        status: 200,
        cache_status: None,
        expect_headers: &[],
        body: None,
        origin_calls: None,
        origin_saw: &[],
    })
}

/// A GET; expects a 200 by default.
pub(crate) const fn get(path: &'static str) -> Step {
    send("GET", path)
}

/// A HEAD; expects a 200 by default.
pub(crate) const fn head(path: &'static str) -> Step {
    send("HEAD", path)
}

impl Step {
    const fn ask(&mut self) -> &mut Ask {
        match self {
            Step::Send(ask) => ask,
            _ => panic!("only a request step has expectations"),
        }
    }

    /// Sends these request headers. A value `{name:N}` is the `name` header of step N's answer (steps counted
    /// from 1), for validators and dates the cache made.
    pub(crate) const fn with(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.ask().headers = headers;
        self
    }

    /// Expects this status.
    pub(crate) const fn status(mut self, status: u16) -> Self {
        self.ask().status = status;
        self
    }

    /// Expects this `Cache-Status` shape.
    pub(crate) const fn cache(mut self, shape: &'static str) -> Self {
        self.ask().cache_status = Some(shape);
        self
    }

    /// Expects these response headers.
    pub(crate) const fn headers(mut self, expect: &'static [(&'static str, Is)]) -> Self {
        self.ask().expect_headers = expect;
        self
    }

    /// Expects this body.
    pub(crate) const fn body(mut self, body: Is) -> Self {
        self.ask().body = Some(body);
        self
    }

    /// Expects this many origin requests for the path.
    pub(crate) const fn calls(mut self, n: usize) -> Self {
        self.ask().origin_calls = Some(n);
        self
    }

    /// Expects the origin's last request for the path to have carried these headers.
    pub(crate) const fn origin_saw(mut self, expect: &'static [(&'static str, Is)]) -> Self {
        self.ask().origin_saw = expect;
        self
    }

    /// A hit: `Cache-Status: etagd; hit; ttl=*`, no origin request.
    pub(crate) const fn hit(self) -> Self {
        self.cache("etagd; hit; ttl=*").calls(0)
    }

    /// A miss that was stored: one origin request.
    pub(crate) const fn stored(self) -> Self {
        self.cache("etagd; fwd=uri-miss; fwd-status=*; stored; ttl=*").calls(1)
    }
}

/// Runs every case through both fronts (as each case allows) and fails listing every case that failed.
pub(crate) async fn run(table: &str, cases: &'static [Case]) {
    assert_distinct_names(cases);
    let memcached = Arc::new(Memcached::start());
    let mut failures = Vec::new();
    for case in cases {
        let mut fronts = vec![fronts::SIDECAR];
        match case.layer {
            Layer::Skip(why) => assert!(!why.is_empty(), "{}: say why the layer cannot run it", case.name),
            Layer::Same | Layer::With(_) => fronts.push(fronts::LAYER),
        }
        for front in fronts {
            let memcached = memcached.clone();
            let task = tokio::spawn(async move {
                tokio::time::timeout(CASE_TIMEOUT, play(case, front, &memcached))
                    .await
                    .unwrap_or_else(|_| panic!("did not finish within {CASE_TIMEOUT:?}"));
            });
            if let Err(error) = task.await {
                let message = match error.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default(),
                    Err(error) => error.to_string(),
                };
                failures.push(format!("[{}] {} via {}: {message}", table, case.name, front));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {table}'s cases failed:\n{}", failures.len(), failures.join("\n"));
}

fn assert_distinct_names(cases: &[Case]) {
    for (i, case) in cases.iter().enumerate() {
        assert!(cases[..i].iter().all(|other| other.name != case.name), "two cases named {:?}", case.name);
    }
}

/// Plays one case on one front.
async fn play(case: &'static Case, front: &'static str, memcached: &Memcached) {
    let mut upstream = Upstream::start(case).await;
    let front = Front::start(case, front, &upstream, memcached).await;
    let mut replies: Vec<Option<Reply>> = Vec::new();
    let mut previous: Option<Reply> = None;
    for (index, step) in case.steps.iter().enumerate() {
        let mut this = None;
        match step {
            Step::Send(ask) => {
                let before = upstream.count(ask.path);
                let headers = substitute(ask.headers, &replies);
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let reply = front.send(ask.method, ask.path, &headers).await;
                let calls = upstream.count(ask.path) - before;
                let seen = upstream.last_headers(ask.path);
                let errors = check(ask, &reply, previous.as_ref(), calls, &seen);
                assert!(
                    errors.is_empty(),
                    "step {} ({} {} {:?}): {}\n    got {} {:?} body {:?}",
                    index + 1,
                    ask.method,
                    ask.path,
                    ask.headers,
                    errors.join("; "),
                    reply.status,
                    reply.headers,
                    reply.text(),
                );
                this = Some(reply.clone());
                previous = Some(reply);
            }
            Step::Reroute(serve) => upstream.route(serve),
            Step::Fail(failing) => upstream.fail(*failing),
            Step::Stop => upstream.stop().await,
            Step::Settle(path) => front.settle(path).await,
            Step::Total(path, n) => {
                assert_eq!(upstream.count(path), *n, "step {}: origin requests for {path} in all", index + 1);
            }
        }
        replies.push(this);
    }
    front.shutdown().await;
}

/// Request headers with `{name:N}` replaced by the `name` header of step N's answer.
fn substitute(headers: &[(&'static str, &'static str)], replies: &[Option<Reply>]) -> Vec<(&'static str, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let reference = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')).and_then(|v| v.split_once(':'));
            let Some((header, step)) = reference else { return (*name, (*value).to_owned()) };
            let step: usize = step.parse().expect("{header:N} names a step number");
            let reply = replies
                .get(step - 1)
                .and_then(Option::as_ref)
                .unwrap_or_else(|| panic!("{value}: step {step} is an earlier request"));
            let found = reply.header(header);
            assert!(!found.is_empty(), "{value}: step {step}'s answer has no {header}");
            (*name, found.to_owned())
        })
        .collect()
}

/// Every way `reply` differs from `ask`'s expectations.
fn check(ask: &Ask, reply: &Reply, previous: Option<&Reply>, calls: usize, seen: &http::HeaderMap) -> Vec<String> {
    let mut errors = Vec::new();
    if reply.status != ask.status {
        errors.push(format!("status {} (expected {})", reply.status, ask.status));
    }
    if let Some(shape) = ask.cache_status {
        let actual = reply.cache_status();
        if !shape_matches(shape, &actual) {
            errors.push(format!("Cache-Status {actual:?} (expected {shape:?})"));
        }
    }
    for (name, is) in ask.expect_headers {
        let value = joined(&reply.headers, name);
        let before = previous.and_then(|p| joined(&p.headers, name));
        if let Err(why) = holds(*is, value.as_deref(), before.as_deref()) {
            errors.push(format!("{name}: {why}"));
        }
    }
    if let Some(is) = ask.body {
        let before = previous.map(Reply::text);
        if let Err(why) = holds(is, Some(&reply.text()), before.as_deref()) {
            errors.push(format!("body: {why}"));
        }
    }
    if let Some(expected) = ask.origin_calls.filter(|expected| *expected != calls) {
        errors.push(format!("{calls} origin requests (expected {expected})"));
    }
    for (name, is) in ask.origin_saw {
        let value = joined(seen, name);
        if let Err(why) = holds(*is, value.as_deref(), None) {
            errors.push(format!("the origin's request {name}: {why}"));
        }
    }
    errors
}

/// A header's lines joined with ", " (RFC 9110 section 5.3), or `None`.
fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let lines: Vec<String> =
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

fn holds(is: Is, value: Option<&str>, before: Option<&str>) -> Result<(), String> {
    let ok = match is {
        Is::Eq(expected) => value == Some(expected),
        Is::Absent => value.is_none(),
        Is::AbsentOr(expected) => value.is_none() || value == Some(expected),
        Is::Present => value.is_some(),
        Is::Contains(part) => value.is_some_and(|v| v.contains(part)),
        Is::Lacks(part) => !value.is_some_and(|v| v.contains(part)),
        Is::AtLeast(n) => value.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|v| v >= n),
        Is::AsBefore => before.is_some() && value == before,
        Is::Changed => value != before,
    };
    if ok { Ok(()) } else { Err(format!("{value:?} is not {is:?} (before: {before:?})")) }
}

/// Whether a `Cache-Status` value has `shape`: the same parameters in order, `name=*` matching any value.
fn shape_matches(shape: &str, actual: &str) -> bool {
    let expected: Vec<&str> = shape.split(';').map(str::trim).collect();
    let got: Vec<&str> = actual.split(';').map(str::trim).collect();
    expected.len() == got.len()
        && expected.iter().zip(&got).all(|(want, have)| match want.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('=') => have.starts_with(prefix),
            _ => want == have,
        })
}

#[test]
fn cache_status_shapes_match_only_their_own_parameters() {
    assert!(shape_matches("etagd; hit; ttl=*", "etagd; hit; ttl=59"));
    assert!(!shape_matches("etagd; hit; ttl=*", "etagd; hit"));
    assert!(!shape_matches("etagd; hit; ttl=*", "etagd; fwd=miss; ttl=5"));
    assert!(shape_matches("etagd; fwd=uri-miss; fwd-status=200", "etagd; fwd=uri-miss; fwd-status=200"));
    assert!(!shape_matches("etagd; fwd=uri-miss; fwd-status=200", "etagd; fwd=uri-miss; fwd-status=200; stored"));
}
