//! Validators that survive the proxies in front (issue 10), proven with a real nginx (`gzip on`) in front of
//! etagd: a tag fetched through nginx revalidates through nginx for every coding, including the `W/` copy nginx
//! makes of a tag when it gzips a response itself; every coding decodes to the origin's bytes under a tag
//! derived from the one fill; one invalidation reaches every coding; weakened validators are counted; an
//! origin's own gzip passes through untouched.
//!
//! Responses are read raw (the HTTP client never decompresses) and decoded here, so the tests see exactly the
//! bytes and headers a browser would. br and zstd (made on a client's first demand, gzip with the fill) are
//! asked of etagd directly, since nginx in front is free to
//! re-negotiate codings it does not know.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use etagd_testkit::{Memcached, Nginx};

use crate::support::{HOST, Origin, Reply, Route, guard, url};

/// About 64 KiB of JSON: etagd stores gzip, br and zstd codings of it.
const ITEMS: &str = "/items";
/// Below etagd's `--compress-min-bytes` (1024) and above nginx's `gzip_min_length` (20): nginx gzips it.
const SMALL: &str = "/small";
/// Compressed by the origin itself, with the origin's own ETag.
const PRE_GZIPPED: &str = "/pre-gzipped";
/// The origin's own validator for [`PRE_GZIPPED`].
const ORIGIN_TAG: &str = "\"origin-gz-7\"";

/// The origin's data for [`ITEMS`] at `version`: a list of objects, about 64 KiB, several times compressible
/// (repeated keys and regions, plus a pseudo-random digest per object so it is not trivially so).
fn items_json(version: usize) -> Vec<u8> {
    const REGIONS: [&str; 4] = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ version as u64;
    let items: Vec<serde_json::Value> = (0..450)
        .map(|id| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            serde_json::json!({
                "id": id,
                "version": version,
                "name": format!("server-{id:04}"),
                "region": REGIONS[id % REGIONS.len()],
                "healthy": id % 7 != 0,
                "load": (state >> 33) % 100,
                "digest": format!("{state:016x}"),
                "tags": ["web", "api", "cache"],
            })
        })
        .collect();
    serde_json::to_vec(&items).expect("JSON values serialize")
}

/// The origin's data for [`SMALL`] at `version`: a few hundred bytes.
fn small_json(version: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": version,
        "status": "ok",
        "regions": ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"],
        "message": "all services operational; all services operational; all services operational",
    }))
    .expect("JSON values serialize")
}

/// The JSON body the origin gzips itself for [`PRE_GZIPPED`].
fn pre_gzipped_plain() -> Vec<u8> {
    small_json(99).repeat(3)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// The body decoded per its `Content-Encoding`.
fn decode(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match reply.header("content-encoding") {
        "" => out.extend_from_slice(&reply.body),
        "gzip" => {
            flate2::read::GzDecoder::new(&reply.body[..]).read_to_end(&mut out).expect("a valid gzip body");
        }
        "br" => {
            brotli::BrotliDecompress(&mut &reply.body[..], &mut out).expect("a valid br body");
        }
        "zstd" => out = zstd::decode_all(&reply.body[..]).expect("a valid zstd body"),
        other => panic!("unexpected Content-Encoding {other:?}"),
    }
    out
}

/// Whether `Vary` names `Accept-Encoding`.
fn varies_on_accept_encoding(reply: &Reply) -> bool {
    reply.headers.get_all("vary").iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|value| value.split(',').any(|name| name.trim().eq_ignore_ascii_case("accept-encoding")))
    })
}

/// Whether the response came from the origin (RFC 9211 `fwd` parameter), not from the cache.
fn forwarded(reply: &Reply) -> bool {
    reply.cache_status().contains("fwd=")
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Through nginx, which may gzip.
    Nginx,
    /// Straight to etagd.
    Direct,
}

/// A client kind: where it sends requests and what it accepts.
#[derive(Debug, Clone, Copy)]
struct Client {
    via: Via,
    /// The coding asked for, `None` for identity (no `Accept-Encoding`).
    coding: Option<&'static str>,
}

impl Client {
    const IDENTITY_NGINX: Client = Client { via: Via::Nginx, coding: None };
    const GZIP_NGINX: Client = Client { via: Via::Nginx, coding: Some("gzip") };
    const IDENTITY: Client = Client { via: Via::Direct, coding: None };
    const GZIP: Client = Client { via: Via::Direct, coding: Some("gzip") };
    const BR: Client = Client { via: Via::Direct, coding: Some("br") };
    const ZSTD: Client = Client { via: Via::Direct, coding: Some("zstd") };

    /// Every kind, identity first.
    const ALL: [Client; 6] =
        [Client::IDENTITY_NGINX, Client::GZIP_NGINX, Client::IDENTITY, Client::GZIP, Client::BR, Client::ZSTD];
}

/// The tag etagd derives for `coding` from the fill's base tag `"<base>"`: `"<base>-<coding>"`.
fn tag_for(base: &str, coding: Option<&str>) -> String {
    match coding {
        None => base.to_owned(),
        Some(coding) => {
            let opaque = base.strip_suffix('"').expect("a strong tag ends with a quote");
            format!("{opaque}-{coding}\"")
        }
    }
}

/// Origin, memcached, etagd and nginx in front of it.
struct Stack {
    origin: Origin,
    _memcached: Memcached,
    etagd: Option<etagd::Running>,
    nginx: Option<Nginx>,
    direct: String,
    edge: String,
    admin: String,
    client: reqwest::Client,
}

impl Stack {
    /// Starts the whole chain with the routes every test uses.
    async fn start() -> Stack {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let json = |route: Route| {
            route.header("content-type", "application/json").header("cache-control", "public, max-age=3600")
        };
        origin.route(ITEMS, json(Route::new()).body(|ask| Bytes::from(items_json(ask.version))));
        origin.route(SMALL, json(Route::new()).body(|ask| Bytes::from(small_json(ask.version))));
        let pre_gzipped = Bytes::from(gzip(&pre_gzipped_plain()));
        origin.route(
            PRE_GZIPPED,
            json(Route::new())
                .header("content-encoding", "gzip")
                .header("etag", ORIGIN_TAG)
                .header("vary", "Accept-Encoding")
                .body(move |_| pre_gzipped.clone()),
        );
        let namespace = etagd_testkit::unique_namespace();
        let servers = memcached.addr();
        let config = etagd::config::Config::try_parse_from([
            "etagd",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream",
            &origin.url,
            "--memcached",
            &servers,
            "--namespace",
            &namespace,
            "--drain-timeout",
            "2s",
        ])
        .expect("valid etagd flags");
        let running = etagd::start(config).await.expect("etagd starts");
        let nginx = Nginx::gzip_proxy(&running.proxy_addr.to_string());
        Stack {
            direct: format!("http://{}", running.proxy_addr),
            admin: format!("http://{}", running.admin_addr),
            edge: nginx.url(),
            origin,
            _memcached: memcached,
            etagd: Some(running),
            nginx: Some(nginx),
            // No decompression (reqwest's gzip features are off): the tests see the raw coded bytes.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// Sends a request and reads the whole answer.
    async fn send(&self, method: reqwest::Method, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let mut request = self.client.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
        Reply { status, headers, body }
    }

    /// A GET of `path` as `client`, with extra headers; every answer must carry etagd's `Cache-Status`, so a
    /// 304 seen through nginx is known to be etagd's.
    async fn get(&self, client: Client, path: &str, extra: &[(&str, &str)]) -> Reply {
        let base = match client.via {
            Via::Nginx => &self.edge,
            Via::Direct => &self.direct,
        };
        let mut headers = vec![("host", HOST)];
        if let Some(coding) = client.coding {
            headers.push(("accept-encoding", coding));
        }
        headers.extend_from_slice(extra);
        let reply = self.send(reqwest::Method::GET, &format!("{base}{path}"), &headers, None).await;
        assert!(
            reply.cache_status().starts_with("etagd"),
            "{client:?} {path} {extra:?}: no Cache-Status from etagd: {} {:?}",
            reply.status,
            reply.headers
        );
        reply
    }

    /// A GET that must answer 200 in the client's coding with the origin's bytes and `Vary: Accept-Encoding`
    /// (for [`ITEMS`], whose codings etagd negotiates).
    async fn get_items(&self, client: Client, version: usize) -> Reply {
        let mut reply = self.get(client, ITEMS, &[]).await;
        assert_eq!(reply.status, 200, "{client:?}: {}", reply.text());
        // A fill stores gzip; br and zstd are made when a client first wants one, which meanwhile gets the best
        // stored representation it accepts (identity for these clients, which name one coding only). The
        // coding must arrive, and soon.
        for _ in 0..100 {
            let on_demand = matches!(client.coding, Some("br" | "zstd"));
            if !(on_demand && reply.is_fresh_hit() && reply.header("content-encoding").is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            reply = self.get(client, ITEMS, &[]).await;
        }
        // A fill under a lease answers identity as the origin sent it and produces its coding after (through
        // nginx, nginx gzips that answer itself); one others do not wait for answers from what it stored.
        let coding = reply.header("content-encoding");
        let fill_identity = forwarded(&reply) && client.via == Via::Direct && coding.is_empty();
        assert!(coding == client.coding.unwrap_or("") || fill_identity, "{client:?}: {:?}", reply.headers);
        assert!(varies_on_accept_encoding(&reply), "{client:?}: Vary must name Accept-Encoding: {:?}", reply.headers);
        assert!(
            decode(&reply) == items_json(version),
            "{client:?}: the body does not decode to the origin's bytes (version {version})"
        );
        reply
    }

    /// A revalidation with `tag` as `client` that must come back 304 from etagd, naming the tag in the form the
    /// client holds it (a `W/` copy stays weak) so the client can match the 304 to what it stored (RFC 9111
    /// section 4.3.4).
    async fn revalidate(&self, client: Client, path: &str, tag: &str) -> Reply {
        let reply = self.get(client, path, &[("if-none-match", tag)]).await;
        assert_eq!(reply.status, 304, "{client:?} {path} If-None-Match {tag}: {:?} {}", reply.headers, reply.text());
        assert!(reply.body.is_empty(), "a 304 has no body");
        assert_eq!(reply.etag(), tag, "{client:?} {path}: the 304 names the client's validator as sent");
        reply
    }

    /// `POST /invalidate` on the admin port; it must succeed.
    async fn invalidate(&self, json: &str) {
        let reply = self
            .send(
                reqwest::Method::POST,
                &format!("{}/invalidate", self.admin),
                &[("content-type", "application/json")],
                Some(json),
            )
            .await;
        assert_eq!(reply.status, 200, "invalidate {json}: {}", reply.text());
    }

    /// `etagd_weakened_validators_total` from the admin port's metrics.
    async fn weakened_validators(&self) -> f64 {
        let reply = self.send(reqwest::Method::GET, &format!("{}/metrics", self.admin), &[], None).await;
        assert_eq!(reply.status, 200, "metrics: {}", reply.text());
        let text = reply.text();
        text.lines()
            .find_map(|line| {
                let value = line.strip_prefix("etagd_weakened_validators_total")?;
                value.trim().parse::<f64>().ok()
            })
            .unwrap_or_else(|| panic!("etagd_weakened_validators_total missing from:\n{text}"))
    }

    /// nginx's error log, for failure messages.
    fn nginx_log(&self) -> String {
        self.nginx.as_ref().map(Nginx::error_log).unwrap_or_default()
    }

    /// Stops nginx first (it holds keep-alive connections to etagd), then etagd.
    async fn shutdown(mut self) {
        self.nginx = None;
        if let Some(running) = self.etagd.take() {
            tokio::time::timeout(Duration::from_secs(10), running.shutdown()).await.expect("etagd shuts down");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_fetched_through_nginx_revalidate_through_nginx_for_etagd_codings() {
    guard(async {
        let stack = Stack::start().await;

        let identity = stack.get_items(Client::IDENTITY_NGINX, 1).await;
        let gzipped = stack.get_items(Client::GZIP_NGINX, 1).await;
        let base = identity.etag();
        assert!(base.starts_with('"') && base.ends_with('"'), "a strong tag: {base}");
        // nginx passes an already encoded response through, so etagd's strong gzip tag arrives untouched.
        assert_eq!(gzipped.etag(), tag_for(&base, Some("gzip")));
        assert!(gzipped.is_fresh_hit(), "{}", gzipped.cache_status());

        for (client, tag) in [(Client::IDENTITY_NGINX, identity.etag()), (Client::GZIP_NGINX, gzipped.etag())] {
            let weak = format!("W/{tag}");
            for condition in [tag.as_str(), weak.as_str()] {
                stack.revalidate(client, ITEMS, condition).await;
            }
        }
        // A tag names one representation: the gzip tag does not validate the identity one.
        let crossed = stack.get(Client::IDENTITY_NGINX, ITEMS, &[("if-none-match", &gzipped.etag())]).await;
        assert_eq!(crossed.status, 200, "{}", crossed.cache_status());
        assert_eq!(stack.origin.count(ITEMS), 1, "every answer after the fill came from the cache");
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_weakens_the_tag_of_what_it_gzips_and_the_weak_copy_still_gets_304() {
    guard(async {
        let stack = Stack::start().await;

        let identity = stack.get(Client::IDENTITY_NGINX, SMALL, &[]).await;
        assert_eq!(identity.status, 200);
        assert_eq!(identity.body, small_json(1), "identity passes as the origin sent it");
        let strong = identity.etag();
        assert!(strong.starts_with('"'), "etagd mints a strong tag: {strong}");

        // Too small for etagd to compress: etagd answers identity, so nginx gzips it and weakens the tag.
        let direct = stack.get(Client::GZIP, SMALL, &[]).await;
        assert_eq!(direct.header("content-encoding"), "", "{:?}", direct.headers);
        assert_eq!(direct.etag(), strong);
        let gzipped = stack.get(Client::GZIP_NGINX, SMALL, &[]).await;
        assert_eq!(gzipped.status, 200);
        assert_eq!(
            gzipped.header("content-encoding"),
            "gzip",
            "nginx gzips it: {:?}\n{}",
            gzipped.headers,
            stack.nginx_log()
        );
        assert!(gzipped.is_fresh_hit(), "{}", gzipped.cache_status());
        assert_eq!(decode(&gzipped), small_json(1));
        let weak = gzipped.etag();
        assert_eq!(weak, format!("W/{strong}"), "nginx weakens the tag of what it gzips");

        assert_eq!(stack.weakened_validators().await, 0.0);
        for client in [Client::GZIP_NGINX, Client::IDENTITY_NGINX] {
            stack.revalidate(client, SMALL, &weak).await;
        }
        stack.revalidate(Client::GZIP_NGINX, SMALL, &strong).await;
        assert_eq!(
            stack.weakened_validators().await,
            2.0,
            "each W/ copy of etagd's strong tag is counted, the strong tag is not"
        );
        assert_eq!(stack.origin.count(SMALL), 1, "every answer after the fill came from the cache");
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coding_decodes_to_the_origin_bytes_under_a_tag_of_the_one_fill() {
    guard(async {
        let stack = Stack::start().await;

        let mut tags: Vec<(Client, String)> = Vec::new();
        let mut sizes: Vec<(Client, usize)> = Vec::new();
        for client in Client::ALL {
            let reply = stack.get_items(client, 1).await;
            tags.push((client, reply.etag()));
            sizes.push((client, reply.body.len()));
        }
        assert_eq!(stack.origin.count(ITEMS), 1, "one fill serves every coding");

        let base = tags[0].1.clone();
        for (client, tag) in &tags {
            assert_eq!(*tag, tag_for(&base, client.coding), "{client:?}: the tag derives from the fill's {base}");
        }
        let mut distinct: Vec<&String> = tags.iter().map(|(_, tag)| tag).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "one tag per representation: {tags:?}");

        let plain = items_json(1).len();
        assert!((60 << 10..68 << 10).contains(&plain), "the fixture is about 64 KiB: {plain}");
        for (client, size) in sizes {
            if client.coding.is_some() {
                assert!(size * 3 < plain, "{client:?}: {size} of {plain} bytes");
            }
        }
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalidation_refills_every_coding_from_one_origin_request() {
    guard(async {
        let stack = Stack::start().await;
        let firsts = [Client::GZIP_NGINX, Client::IDENTITY_NGINX, Client::BR, Client::ZSTD];
        let mut previous: Vec<(Client, String)> = Vec::new();
        for (round, first) in firsts.into_iter().enumerate() {
            let mut version = 1;
            if round > 0 {
                version = stack.origin.bump_version();
                let scope = if round % 2 == 0 {
                    r#"{"all":true}"#.to_owned()
                } else {
                    format!(r#"{{"urls":["{}"]}}"#, url(ITEMS))
                };
                stack.invalidate(&scope).await;
            }
            let asked = stack.origin.count(ITEMS);
            let fill = stack.get_items(first, version).await;
            assert!(
                forwarded(&fill),
                "round {round}: {first:?} asks first after the invalidation and misses: {}",
                fill.cache_status()
            );
            assert_eq!(stack.origin.count(ITEMS), asked + 1, "round {round}: one origin request");

            let mut tags: Vec<(Client, String)> = Vec::new();
            for client in Client::ALL {
                let reply = stack.get_items(client, version).await;
                assert!(
                    reply.is_fresh_hit(),
                    "round {round}: {client:?} is served from the new fill: {}",
                    reply.cache_status()
                );
                tags.push((client, reply.etag()));
            }
            let base = tags[0].1.clone();
            for (client, tag) in &tags {
                assert_eq!(*tag, tag_for(&base, client.coding), "round {round}: {client:?}");
            }
            // No coding keeps a validator of the data it no longer has.
            for (client, old) in &previous {
                assert!(!tags.iter().any(|(_, tag)| tag == old), "round {round}: {old} survived");
                let reply = stack.get(*client, ITEMS, &[("if-none-match", old)]).await;
                assert_eq!(reply.status, 200, "round {round}: {client:?} with the old {old}");
                assert_eq!(decode(&reply), items_json(version));
            }
            assert_eq!(
                stack.origin.count(ITEMS),
                asked + 1,
                "round {round}: the origin is asked once, whatever the codings asked afterwards"
            );
            previous = tags;
        }
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_copies_of_minted_tags_are_counted_and_still_get_304() {
    guard(async {
        let stack = Stack::start().await;
        // The fill's own answer is identity: the gzip tag is the next answer's.
        assert!(forwarded(&stack.get_items(Client::GZIP, 1).await));
        let gzip_tag = stack.get_items(Client::GZIP, 1).await.etag();
        let origin_tag = stack.get(Client::GZIP, PRE_GZIPPED, &[]).await.etag();
        assert_eq!(origin_tag, ORIGIN_TAG);
        assert_eq!(stack.weakened_validators().await, 0.0);

        stack.revalidate(Client::GZIP, ITEMS, &gzip_tag).await;
        stack.revalidate(Client::GZIP, PRE_GZIPPED, &format!("W/{ORIGIN_TAG}")).await;
        assert_eq!(
            stack.weakened_validators().await,
            0.0,
            "neither a strong tag nor a weak copy of the origin's own tag counts"
        );

        stack.revalidate(Client::GZIP_NGINX, ITEMS, &format!("W/{gzip_tag}")).await;
        assert!(stack.weakened_validators().await > 0.0, "a W/ copy of a tag etagd minted is counted");
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_gzip_response_is_stored_and_served_as_it_came() {
    guard(async {
        let stack = Stack::start().await;
        let wire = gzip(&pre_gzipped_plain());

        let mut replies = Vec::new();
        for client in [Client::GZIP_NGINX, Client::GZIP_NGINX, Client::GZIP] {
            let reply = stack.get(client, PRE_GZIPPED, &[]).await;
            assert_eq!(reply.status, 200, "{client:?}: {}", reply.text());
            assert_eq!(reply.header("content-encoding"), "gzip", "{client:?}");
            assert_eq!(reply.etag(), ORIGIN_TAG, "{client:?}: the origin's tag, unchanged");
            assert!(reply.body == wire, "{client:?}: the origin's gzip bytes, unchanged");
            assert_eq!(decode(&reply), pre_gzipped_plain());
            replies.push(reply);
        }
        assert!(replies[0].cache_status().contains("stored"), "{}", replies[0].cache_status());
        for reply in &replies[1..] {
            assert!(reply.is_fresh_hit(), "{}", reply.cache_status());
        }
        stack.revalidate(Client::GZIP_NGINX, PRE_GZIPPED, ORIGIN_TAG).await;
        assert_eq!(stack.origin.count(PRE_GZIPPED), 1, "stored once, served from the cache");
        stack.shutdown().await;
    })
    .await;
}
